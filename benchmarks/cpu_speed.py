"""How fast rocmre trains and predicts on this machine's CPU (default: the full ROC config on MNRE).

    python benchmarks/cpu_speed.py [--config configs/mnre_roc.yaml] [--steps 30]

Measures training steps (forward, backward, optimiser) on real MNRE batches, scoring throughput on val, and
single-pair prediction latency; projects the full training time from them (epochs x steps + one val pass per
epoch). Writes benchmarks/results/cpu_speed.md and .json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "mnre_roc.yaml"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args()

    import os

    import torch
    from suite import git_commit
    from torch.utils.data import DataLoader

    from rocmre.inference.extractor import RelationExtractor
    from rocmre.modeling.model import RelationModel
    from rocmre.modeling.runtime import ModelRuntime
    from rocmre.training.config import RunConfig
    from rocmre.training.trainer import load_run_data, relation_set

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    cfg = RunConfig.from_yaml(args.config)
    train = load_run_data(cfg, "train")
    val = load_run_data(cfg, "val")
    model = RelationModel.build(cfg.model.model_copy(update={"negative_label": cfg.data.negative_label}),
                                relation_set(cfg, train.labels.labels) if cfg.model.model_type == "roc" else None)
    runtime = ModelRuntime(model)
    runtime.precompute_images(list(train) + list(val), show_progress=False)
    bs = cfg.train.batch_size
    feats = runtime.featurize(train.records[: bs * (args.steps + 3)])
    loader = DataLoader(feats, batch_size=bs, shuffle=False, collate_fn=runtime.collator)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.learning_rate)
    model.train()
    times = []
    for i, batch in enumerate(loader):
        t0 = time.perf_counter()
        out = model(batch, descriptions_per_relation=cfg.train.descriptions_per_relation)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    train_eps = bs / step_s

    val_feats = runtime.featurize(val.records)
    t0 = time.perf_counter()
    runtime.score(val_feats, cfg.train.eval_batch_size)
    val_s = time.perf_counter() - t0

    steps_per_epoch = -(-len(train) // bs)
    projected_min = (cfg.train.epochs * (steps_per_epoch * step_s + val_s)) / 60

    extractor = RelationExtractor(model)
    text = "Rafael Nadal gets engaged to girlfriend of 14 years , Mery Perello"
    extractor.predict(text, "Rafael Nadal", "Mery Perello")
    lat = []
    for _ in range(20):
        t0 = time.perf_counter()
        extractor.predict(text, "Rafael Nadal", "Mery Perello")
        lat.append(time.perf_counter() - t0)

    res = {
        "command": "python benchmarks/cpu_speed.py " + shlex.join(sys.argv[1:]),
        "commit": git_commit(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
        "config": str(Path(args.config).relative_to(REPO)) if Path(args.config).is_relative_to(REPO) else args.config,
        "train_step_seconds_median": step_s, "train_examples_per_second": train_eps,
        "val_scoring_seconds": val_s, "val_records": len(val), "val_examples_per_second": len(val) / val_s,
        "steps_per_epoch": steps_per_epoch, "epochs": cfg.train.epochs,
        "projected_full_training_minutes": projected_min,
        "predict_latency_ms_median": 1000 * statistics.median(lat),
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_speed.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [
        "# Speed on a CPU", "",
        f"Produced by `{res['command']}` at commit `{res['commit']}` on {res['machine']} ({res['date']}); "
        f"config `{res['config']}`. Medians over {len(times)} training steps after 3 warm-up steps.", "",
        "| measure | value |", "| --- | --- |",
        f"| training step (batch {bs}: forward, backward, AdamW) | {step_s:.2f} s ({train_eps:.1f} examples/s) |",
        f"| scoring val ({len(val)} records) | {val_s:.1f} s ({len(val) / val_s:.0f} examples/s) |",
        f"| one epoch ({steps_per_epoch} steps) + one val pass | {(steps_per_epoch * step_s + val_s) / 60:.1f} min |",
        f"| full training, {cfg.train.epochs:g} epochs (projected from the above) | {projected_min:.1f} min |",
        f"| `RelationExtractor.predict` on one sentence, no image | {res['predict_latency_ms_median']:.0f} ms |",
        "", "The projection multiplies measured step and scoring times; other processes on the machine slow "
        "every figure here.",
    ]
    (out / "cpu_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
