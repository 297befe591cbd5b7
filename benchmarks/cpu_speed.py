"""How fast rocmre trains and predicts on this machine's CPU, lever by lever (issue: speed on 2 cores).

    python benchmarks/cpu_speed.py                                  # step timings, prediction, 10k retrieval
    python benchmarks/cpu_speed.py --fast-run runs/speed_fast --fp32-run runs/speed_fp32   # + full trainings

Measured in one process (so ratios compare like with like): training steps (forward, backward, AdamW, exactly
the Trainer's step) for the classifier and ROC under each speed lever, validation scoring, ``predict_batch``
against the bare text encoder's forward on the same tokenised inputs, single-pair latency, and scoring against
10,000 relations. The full trainings are real ``rocmre train`` runs whose ``metrics.json`` is read (train them
first with ``--train`` or point at finished ones); without an fp32 run, its time is projected and marked so.
Writes benchmarks/results/cpu_speed.{json,md}.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import REPO, git_commit  # noqa: E402

#: the speed levers, each a set of config overrides on top of the canonical configs (measured as rows); levers in
#: ROC_ONLY (the description refresh, frozen layers under trainable markers) have no classifier row
_OFF = {"train.mixed_precision": "no", "train.group_by_length": "false", "train.fused_optimizer": "false",
        "train.description_refresh_steps": "1", "train.fast_dropout": "false", "model.frozen_text_layers": "0"}


def _lever(**on: str) -> list[str]:
    return [f"{k}={on.get(k.split('.')[1], v)}" for k, v in _OFF.items()]


_BASE = dict(mixed_precision="bf16", group_by_length="true", fused_optimizer="true")
_CANON = dict(_BASE, description_refresh_steps="8", fast_dropout="true")
_CANON_NAME = "bf16 + length-grouped + fused AdamW + descriptions every 8 steps + fast dropout"
_CLS_NAME = "bf16 + length-grouped + fused AdamW + fast dropout"
#: the levers that froze the word embeddings alone (marker rows trained, frozen layers under them) left the
#: library with those switches: model.frozen_text_layers = N now fixes the embeddings and the markers (from < > { })
#: and freezes the N lowest layers; their measured rows stay in results/cpu_speed.json (docs/experiments.md)


def _prefix(n: int) -> str:
    return f" + word embeddings and markers fixed (from < > {{ }}) + {n} lowest text layers frozen, output cached"


def _prefix_lever(base: dict, n: int) -> list[str]:
    return _lever(**base, frozen_text_layers=str(n))


_PREFIX_NS = (2, 3)
LEVERS = {
    "fp32 (canonical before the speed work)": _lever(),
    "bf16 autocast": _lever(mixed_precision="bf16"),
    "bf16 + length-grouped batches": _lever(mixed_precision="bf16", group_by_length="true"),
    "bf16 + length-grouped + fused AdamW": _lever(**_BASE),
    "bf16 + length-grouped + fused AdamW + descriptions every 8 steps": _lever(**_BASE, description_refresh_steps="8"),
    _CLS_NAME: _lever(**_BASE, fast_dropout="true"),
    **{_CLS_NAME + _prefix(n): _prefix_lever(dict(_BASE, fast_dropout="true"), n) for n in _PREFIX_NS},
    _CANON_NAME: _lever(**_CANON),
    **{_CANON_NAME + _prefix(n): _prefix_lever(_CANON, n) for n in _PREFIX_NS},
    _CANON_NAME.replace("every 8", "every 16") + _prefix(2): _prefix_lever(dict(_CANON, description_refresh_steps="16"),
                                                                           2),
}
ROC_ONLY = {name for name in LEVERS if "descriptions" in name}
FP32 = next(iter(LEVERS))
#: the computation switches alone, off: an fp32 twin that keeps the model the fast config trains (word embeddings
#: and markers fixed, the lowest layers frozen) and undoes only how it is computed and batched
#: (``--fp32-arithmetic-run``), to separate what the arithmetic costs from what the frozen prefix does
ARITHMETIC_OFF = ["train.mixed_precision=no", "train.group_by_length=false", "train.fused_optimizer=false",
                  "train.description_refresh_steps=1", "train.fast_dropout=false", "train.inference_precision=fp32"]


#: torch operators by what they do, for the profile of a canonical step
_OP_GROUPS = {
    "matrix products (mm, addmm, bmm)": ("aten::mm", "aten::addmm", "aten::bmm"),
    "dtype casts (copy_, _to_copy)": ("aten::copy_", "aten::_to_copy"),
    "dropout masks drawn by torch (bernoulli_)": ("aten::bernoulli_",),
    "optimizer and gradient clipping (fused AdamW, norms, zeroing)": (
        "aten::_fused_adamw_", "aten::linalg_vector_norm", "aten::_foreach_norm", "aten::_foreach_mul_",
        "Optimizer.zero_grad#AdamW.zero_grad"),
}


def profile_steps(cfg, feats, model, runtime, steps: int) -> dict:
    """Where a training step's time goes: seconds per step by operator group (torch profiler, self time on the
    calling thread); the rest of the wall time is Python and numpy (fast-dropout masks, batching)."""
    from torch.profiler import profile

    states = frozen_states(cfg, feats, model, runtime, steps)  # computed outside the profile (epochs 2+)
    time_steps(cfg, feats, model, runtime, 0, states)  # warm-up outside the profile
    with profile() as prof:
        t0 = time.perf_counter()
        time_steps(cfg, feats, model, runtime, steps, states)
        wall = time.perf_counter() - t0
    self_s: dict[str, float] = {}
    for evt in prof.key_averages():
        self_s[evt.key] = self_s.get(evt.key, 0.0) + evt.self_cpu_time_total / 1e6
    n = steps + 3  # time_steps also runs its 3 warm-up steps
    out = {group: sum(self_s.get(op, 0.0) for op in ops) / n for group, ops in _OP_GROUPS.items()}
    grouped = {op for ops in _OP_GROUPS.values() for op in ops}
    out["other torch operators (element-wise, softmax, layer norm, ...)"] = sum(
        v for k, v in self_s.items() if k not in grouped and k.startswith("aten::")) / n
    out["outside torch operators (Python, numpy)"] = max(0.0, wall / n - sum(out.values()))
    return {"steps": n, "wall_s_per_step": wall / n, "seconds_per_step": out}


def retrieval_overhead(pred: dict) -> float:
    """Extra time per pair against 10,000 relations (fraction): the median over batches of the paired time ratio
    (each batch through both extractors back to back), or, for results measured before that, the ratio of the
    rounds' median throughputs."""
    paired = pred.get("retrieval_10k_paired_batches")
    if paired:
        return statistics.median(b / a for a, b in zip(paired["relations_23_s"], paired["relations_10k_s"],
                                                         strict=True)) - 1
    return _median(pred, "default") / _median(pred, "default_10k") - 1


def _pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _step_batches(cfg, train_feats, steps: int) -> list[list[int]]:
    from rocmre.training.trainer import epoch_batches

    lengths = [len(f.input_ids) for f in train_feats] if cfg.train.group_by_length else None
    return epoch_batches(len(train_feats), cfg.train.batch_size, cfg.seed, 0, lengths)[: steps + 3]


def _training_precision(cfg) -> str:
    from rocmre.backbones.hardware import resolve_precision

    return resolve_precision(cfg.train.mixed_precision if cfg.train.mixed_precision != "no" else "fp32")


def _autocast(precision: str):
    import contextlib

    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def frozen_states(cfg, train_feats, model, runtime, steps: int):
    """A model with a frozen prefix (``train.cache_frozen_states``): its cache, filled for the batches
    :func:`time_steps` runs (as in epochs 2+ of a training); otherwise ``None``."""
    from rocmre.training.frozen_states import FrozenStatesCache

    if not (cfg.train.cache_frozen_states and model.frozen_prefix_layers):
        return None
    states = FrozenStatesCache(model)
    precision = _training_precision(cfg)
    model.train()
    for b in _step_batches(cfg, train_feats, steps):
        items = [train_feats[j] for j in b]
        with _autocast(precision):
            states.attach(runtime.collator(items), b, items)
    return states


class StepTimer:
    """The Trainer's step (batches as configured, autocast, clip, AdamW) on ``steps + 3`` fixed batches, one call
    per step. A model with a frozen prefix is timed as in epochs 2+ (``states``, or :func:`frozen_states`: its
    lower layers' output computed beforehand)."""

    def __init__(self, cfg, train_feats, model, runtime, steps: int, states=None) -> None:
        import torch

        from rocmre.modeling.dropout import use_fast_dropout

        self.cfg, self.feats, self.model, self.runtime = cfg, train_feats, model, runtime
        self.batches = _step_batches(cfg, train_feats, steps)
        self.precision = _training_precision(cfg)  # resolved once, outside the timed steps
        model.cache_frozen_states = cfg.train.cache_frozen_states  # as the Trainer sets it
        self.states = states if states is not None else frozen_states(cfg, train_feats, model, runtime, steps)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.train.learning_rate,
                                     **({"fused": True} if cfg.train.fused_optimizer else {}))
        if cfg.train.fast_dropout:
            use_fast_dropout(model)
        self.gen = torch.Generator().manual_seed(0)
        model.train()

    def step(self, i: int) -> float:
        """Run step ``i`` (its batch; descriptions refreshed when ``i`` is a multiple of the refresh interval) and
        return its seconds."""
        import torch

        cfg, b = self.cfg, self.batches[i]
        t0 = time.perf_counter()
        items = [self.feats[j] for j in b]
        batch = self.runtime.collator(items)
        with _autocast(self.precision):
            if self.states is not None:
                self.states.attach(batch, b, items)
            out = self.model(batch, descriptions_per_relation=cfg.train.descriptions_per_relation, generator=self.gen,
                             refresh_descriptions=i % cfg.train.description_refresh_steps == 0)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.grad_clip)
        self.opt.step()
        self.opt.zero_grad()
        return time.perf_counter() - t0


def time_steps(cfg, train_feats, model, runtime, steps: int, states=None) -> list[float]:
    """Seconds per training step for ``steps`` steps after 3 warm-up steps (see :class:`StepTimer`)."""
    timer = StepTimer(cfg, train_feats, model, runtime, steps, states)
    return [timer.step(i) for i in range(len(timer.batches))][3:]


def interleaved_steps(timers: dict[str, StepTimer], steps: int) -> dict[str, list[float]]:
    """Time several models' steps alternately on the same step numbers (3 warm-up steps first), so that a slow
    spell of the machine hits each alike."""
    times: dict[str, list[float]] = {name: [] for name in timers}
    for i in range(steps + 3):
        for name, timer in timers.items():
            seconds = timer.step(i)
            if i >= 3:
                times[name].append(seconds)
    return times


def canonical_step_ratio(roc_config: str, cls_config: str, train, steps: int) -> dict:
    """The canonical ROC and classifier steps timed alternately (:func:`interleaved_steps`) on the same batches, over
    whole description-refresh cycles: the ratio of mean step times counts ROC's refresh steps at their real share."""
    import numpy as np
    import torch

    from rocmre.training.config import RunConfig
    from rocmre.training.setup import build_model, make_runtime

    cfgs = {"roc": RunConfig.from_yaml(roc_config), "classifier": RunConfig.from_yaml(cls_config)}
    refresh = cfgs["roc"].train.description_refresh_steps
    steps = -(-steps // refresh) * refresh  # timed steps i = 3 .. steps + 2 hold steps / refresh refreshes
    sample = np.random.default_rng(1).choice(len(train), size=32 * (steps + 3), replace=False)
    timers = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        model = build_model(cfg, train.labels.labels)
        runtime = make_runtime(model, cfg)
        feats = runtime.featurize([train.records[i] for i in sorted(sample)])
        timers[name] = StepTimer(cfg, feats, model, runtime, steps)
    times = interleaved_steps(timers, steps)
    means = {k: statistics.mean(v) for k, v in times.items()}
    return {"steps": steps, "description_refresh_steps": refresh, "step_s": times, "mean_s": means,
            "median_s": {k: statistics.median(v) for k, v in times.items()},
            "ratio_of_means": means["roc"] / means["classifier"],
            "roc_row": _lever_of(cfgs["roc"]), "classifier_row": _lever_of(cfgs["classifier"], cls=True)}


def _check_pair(fast: dict, fp32: dict) -> None:
    if "run_config" in fast and "run_config" in fp32:
        differ = recipe_differences(fast["run_config"], fp32["run_config"])
        if differ:
            raise SystemExit(f"{fp32['folder']} is not {fast['folder']} with the fp32 lever: they also differ in "
                             f"{', '.join(differ)}; train the fp32 run from the same config (--train-only)")


def apply_full_runs(res: dict, fast: dict | None, fp32: dict | None, delta_pair: list[str] | None,
                    fp32_paused_s: float = 0.0, earlier_pair: tuple[dict, dict] | None = None) -> None:
    """Fill the summary's full-training figures from finished runs' metrics.json (fp32: projected without a run,
    less ``fp32_paused_s`` seconds it spent stopped; the F1 delta from the two CPU runs, else from ``delta_pair``,
    two runs of another machine, named as such). Without an fp32 run of the fast run's recipe, ``earlier_pair``
    (a fast run and its fp32 run of an earlier canonical recipe, both CPU runs) gives the fp32 figures, and the
    notes say how that recipe differs from the fast run's."""
    s, notes = res["summary"], res["notes"]
    if fast and fp32:
        _check_pair(fast, fp32)
    recipe = ""
    if fp32 is None and earlier_pair is not None:
        _check_pair(*earlier_pair)
        res["earlier_recipe_pair"] = [run["folder"] for run in earlier_pair]
        if fast and "run_config" in fast and "run_config" in earlier_pair[0]:
            changed = config_differences(earlier_pair[0]["run_config"], fast["run_config"])
            recipe = "; ".join(f"`{k}` {a} -> {b}" for k, (a, b) in changed.items())
        recipe = (f"from the pair `{earlier_pair[0]['folder']}` / `{earlier_pair[1]['folder']}` of the canonical "
                  f"recipe before {recipe or 'today'} (the same speed switches; the fp32 run of the fast run's "
                  f"recipe is not finished)")
        fp32 = earlier_pair[1]
    res["fp32_run_paused_seconds"] = fp32_paused_s
    if fast:
        s["full_training_minutes"] = fast["timings"]["train_minutes"]
        s["train_peak_rss_mb"] = fast["timings"].get("peak_rss_mb")
        notes["train_peak_rss_mb"] = "from the full fast run's metrics.json"
    else:
        notes.setdefault("train_peak_rss_mb", "peak of this benchmark process after the step timings (no full run)")
    s["fp32_full_training_minutes"] = (fp32["timings"]["train_minutes"] - fp32_paused_s / 60 if fp32
                                       else res["projected_fp32_full_training_minutes"])
    notes["fp32_full_training_minutes"] = (
        "PROJECTED from the fp32 step time x steps + validation passes (no fp32 run)" if not fp32
        else "measured (rocmre train, metrics.json)" if not fp32_paused_s
        else f"measured (rocmre train, metrics.json: {fp32['timings']['train_minutes']:.1f} min of wall time) less "
             f"{fp32_paused_s / 60:.1f} min during which the run was stopped (SIGSTOP) so that other timings could "
             f"run on an idle machine") + (f"; {recipe}" if recipe else "")
    res["fast_run_val_micro_f1"] = fast["results"]["val"]["f1"] if fast else None
    res["fp32_run_val_micro_f1"] = fp32["results"]["val"]["f1"] if fp32 else None
    res["fast_run"], res["fp32_run"] = (fast or {}).get("folder"), (fp32 or {}).get("folder")
    if recipe:
        base = earlier_pair[0]["results"]["val"]["f1"]
        s["val_micro_f1_delta_fast_vs_fp32"] = 100 * (base - fp32["results"]["val"]["f1"])
        notes["val_micro_f1_delta_fast_vs_fp32"] = (
            f"{100 * base:.2f} - {100 * fp32['results']['val']['f1']:.2f}, {recipe}; the fast run itself: val "
            f"{100 * fast['results']['val']['f1']:.2f}" if fast else recipe)
    elif fast and fp32:
        s["val_micro_f1_delta_fast_vs_fp32"] = 100 * (fast["results"]["val"]["f1"] - fp32["results"]["val"]["f1"])
        notes["val_micro_f1_delta_fast_vs_fp32"] = "the two full CPU runs (same seed)"
    elif delta_pair:
        res["delta_pair"] = list(delta_pair)
        pair = [json.loads(Path(f).read_text(encoding="utf-8")) for f in delta_pair]
        s["val_micro_f1_delta_fast_vs_fp32"] = 100 * (pair[0]["results"]["val"]["f1"] - pair[1]["results"]["val"]["f1"])
        notes["val_micro_f1_delta_fast_vs_fp32"] = (
            f"`{delta_pair[0]}` ({100 * pair[0]['results']['val']['f1']:.2f}) minus `{delta_pair[1]}` "
            f"({100 * pair[1]['results']['val']['f1']:.2f}): same seed, trained on "
            f"{pair[0]['timings']['machine']}, not on this CPU, without fast dropout (a GPU does not use it)")
    else:
        s["val_micro_f1_delta_fast_vs_fp32"] = None
        notes["val_micro_f1_delta_fast_vs_fp32"] = "not measured"


def full_run_pair(fast: dict, fp32: dict, fp32_paused_s: float = 0.0) -> dict:
    """One seed-matched pair of full runs (``run_metrics``: the fast run and its fp32 twin, refused unless their
    configs differ in the fp32 lever alone) as the results keep it, so that the figures outlive the run folders."""
    _check_pair(fast, fp32)
    return {"seed": fast.get("run_config", {}).get("seed"), "fast_run": fast["folder"], "fp32_run": fp32["folder"],
            "fast_val_micro_f1": 100 * fast["results"]["val"]["f1"],
            "fp32_val_micro_f1": 100 * fp32["results"]["val"]["f1"],
            "fast_minutes": fast["timings"]["train_minutes"],
            "fp32_minutes": fp32["timings"]["train_minutes"] - fp32_paused_s / 60,
            "fp32_paused_seconds": fp32_paused_s, "fast_peak_rss_mb": fast["timings"].get("peak_rss_mb")}


def arithmetic_twin(twin: dict, pairs: list[dict], roc_config: str) -> dict:
    """An fp32 twin that keeps the fast config's model (``run_metrics`` of a ``--fp32-arithmetic-run``) beside the
    recorded fast run of its seed (``pairs``: ``full_run_pairs``); refused unless its config is ``roc_config`` with
    that seed and :data:`ARITHMETIC_OFF` alone."""
    import yaml

    seed = twin.get("run_config", {}).get("seed")
    fast = next((p for p in pairs if p["seed"] == seed), None)
    if fast is None:
        raise SystemExit(f"{twin['folder']} was trained with seed {seed}: the results hold no fast run of that seed "
                         f"(full runs of seeds {', '.join(str(p['seed']) for p in pairs) or 'none'})")
    if "run_config" in twin:
        canonical = yaml.safe_load(Path(roc_config).read_text(encoding="utf-8"))
        differ = recipe_differences(canonical, twin["run_config"], [*ARITHMETIC_OFF, f"seed={seed}"])
        if differ:
            raise SystemExit(f"{twin['folder']} is not {roc_config} with the computation switches off alone: it also "
                             f"differs in {', '.join(differ)}; train it with --train-only --fp32-arithmetic-run")
    return {"seed": seed, "fast_run": fast["fast_run"], "fast_val_micro_f1": fast["fast_val_micro_f1"],
            "twin_run": twin["folder"], "twin_val_micro_f1": 100 * twin["results"]["val"]["f1"],
            "twin_minutes": twin["timings"]["train_minutes"]}


def apply_arithmetic_twins(res: dict, twins: list[dict]) -> None:
    """Keep the arithmetic twins and the mean val delta of the fast runs over them (outside the summary, whose
    delta stays against the fp32 runs with every switch off)."""
    res["arithmetic_twins"] = twins
    res["val_micro_f1_delta_fast_vs_fp32_arithmetic"] = statistics.mean(
        t["fast_val_micro_f1"] - t["twin_val_micro_f1"] for t in twins)


def render_arithmetic_twins(res: dict) -> list[str]:
    """The Markdown table of the fp32 twins that keep the fast config's model."""
    twins = res.get("arithmetic_twins")
    if not twins:
        return []
    switches = ", ".join(f"`{o}`" for o in ARITHMETIC_OFF)
    lines = ["", "## The computation alone: fp32 twins that keep the fast config's model", "",
             "The fp32 runs above undo every speed switch, the frozen prefix included (word embeddings and markers "
             "fixed, the two lowest layers frozen), which changes the model trained, not only its arithmetic. Each "
             f"twin here is the canonical config with only the computation switches off ({switches}; "
             "`cpu_speed.py --train-only --seed N --fp32-arithmetic-run DIR`), beside the fast run of its seed. "
             "Mean fast - twin: "
             f"**{res['val_micro_f1_delta_fast_vs_fp32_arithmetic']:+.2f}** points of val micro-F1 (not the "
             "summary's delta, which stays against the runs with every switch off). Minutes: the twin's wall time, "
             "whatever else shared the machine (not a speed figure).", "",
             "| seed | fast run | val micro-F1 | fp32 twin (prefix kept) | val micro-F1 | minutes | fast - twin |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for t in twins:
        lines.append(f"| {t['seed']} | `{t['fast_run']}` | {t['fast_val_micro_f1']:.2f} | `{t['twin_run']}` | "
                     f"{t['twin_val_micro_f1']:.2f} | {t['twin_minutes']:.1f} | "
                     f"{t['fast_val_micro_f1'] - t['twin_val_micro_f1']:+.2f} |")
    return lines


def recorded_pair(res: dict, seed: int | None) -> dict:
    """The single fast/fp32 pair of results written before pairs were kept (``fast_run`` ... fields), as a pair;
    ``seed``: the seed both were trained with (the config's: they were trained without ``--seed``)."""
    return {"seed": seed, "fast_run": res["fast_run"], "fp32_run": res["fp32_run"],
            "fast_val_micro_f1": 100 * res["fast_run_val_micro_f1"],
            "fp32_val_micro_f1": 100 * res["fp32_run_val_micro_f1"],
            "fast_minutes": res["summary"]["full_training_minutes"],
            "fp32_minutes": res["summary"]["fp32_full_training_minutes"],
            "fp32_paused_seconds": res.get("fp32_run_paused_seconds", 0.0),
            "fast_peak_rss_mb": res["summary"].get("train_peak_rss_mb")}


def apply_pairs(res: dict, pairs: list[dict]) -> None:
    """Fill the summary's full-training figures from seed-matched pairs of full runs: the val micro-F1 delta is the
    mean of the per-pair deltas (one seed's delta is within seed noise of zero either way); the fast and the fp32
    training minutes and the training peak are the highest of the pairs' runs (pairs may be trained on different
    hosts of the same machine type: a time target must hold on each). Replaces the single-pair fields."""
    if not pairs:
        raise ValueError("no full-run pairs")
    s, notes = res["summary"], res["notes"]
    for key in ("fast_run", "fp32_run", "fast_run_val_micro_f1", "fp32_run_val_micro_f1", "fp32_run_paused_seconds",
                "earlier_recipe_pair", "delta_pair"):
        res.pop(key, None)
    res["full_run_pairs"] = pairs
    deltas = [p["fast_val_micro_f1"] - p["fp32_val_micro_f1"] for p in pairs]
    s["full_training_minutes"] = max(p["fast_minutes"] for p in pairs)
    s["fp32_full_training_minutes"] = max(p["fp32_minutes"] for p in pairs)
    s["val_micro_f1_delta_fast_vs_fp32"] = statistics.mean(deltas)
    peaks = [p["fast_peak_rss_mb"] for p in pairs if p.get("fast_peak_rss_mb") is not None]
    s["train_peak_rss_mb"] = max(peaks) if peaks else s.get("train_peak_rss_mb")
    seeds = ", ".join(str(p["seed"]) for p in pairs)
    paused = sum(p["fp32_paused_seconds"] for p in pairs)
    notes["train_peak_rss_mb"] = "the highest of the full fast runs' metrics.json"
    notes["fp32_full_training_minutes"] = (
        f"the slowest of {len(pairs)} measured runs (rocmre train, metrics.json; seeds {seeds}: "
        + ", ".join(f"{p['fp32_minutes']:.1f}" for p in pairs) + " min)"
        + (f", less {paused / 60:.1f} min in all during which runs were stopped (SIGSTOP) so that other timings "
           "could run on an idle machine" if paused else ""))
    notes["val_micro_f1_delta_fast_vs_fp32"] = (
        f"mean over {len(pairs)} seed-matched pairs of full CPU runs: "
        + ", ".join(f"{d:+.2f} (seed {p['seed']})" for d, p in zip(deltas, pairs, strict=True))
        + (f"; std of the per-pair deltas {statistics.stdev(deltas):.2f}" if len(pairs) > 1 else ""))


def render_pairs(pairs: list[dict]) -> list[str]:
    """The Markdown table of the seed-matched full runs."""
    lines = ["", "## Full trainings: the fast config and its fp32 twin, seed-matched", "",
             "Each pair: `rocmre train` of the canonical config as it is and with every speed switch off "
             "(`cpu_speed.py --train-only [--seed N]`), same seed, same recipe otherwise; the summary takes the mean "
             "of the val deltas and the slowest run's minutes.", "",
             "| seed | fast run | val micro-F1 | minutes | fp32 run | val micro-F1 | minutes | fast - fp32 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in pairs:
        paused = f" ({p['fp32_paused_seconds'] / 60:.0f} min stopped, taken off)" if p["fp32_paused_seconds"] else ""
        lines.append(f"| {p['seed']} | `{p['fast_run']}` | {p['fast_val_micro_f1']:.2f} | {p['fast_minutes']:.1f} | "
                     f"`{p['fp32_run']}` | {p['fp32_val_micro_f1']:.2f} | {p['fp32_minutes']:.1f}{paused} | "
                     f"{p['fast_val_micro_f1'] - p['fp32_val_micro_f1']:+.2f} |")
    return lines


def _median(pred: dict, key: str) -> float:
    return statistics.median(pred["pairs_per_s"][key])


def precision_f1(model_dir: str) -> dict:
    """Val and test micro-F1 of a trained model predicted in fp32 and in bf16, and how many predictions differ."""
    from rocmre.inference.extractor import RelationExtractor
    from rocmre.training.config import RunConfig

    cfg = RunConfig.from_yaml(Path(model_dir) / "run_config.yaml")
    extractors = {prec: RelationExtractor.from_pretrained(model_dir, precision=prec) for prec in ("fp32", "bf16")}
    return {"model": model_dir, **split_f1(cfg, extractors)}


def split_f1(cfg, extractors: dict) -> dict:
    """``{split}_{name}_micro_f1`` and ``_seconds`` of each of two extractors on val and test, ``{split}_records``,
    and ``{split}_changed_predictions`` (how many predictions of the second differ from the first's)."""
    from rocmre.evaluation.metrics import micro_prf
    from rocmre.training.setup import load_run_data

    out: dict = {}
    first, second = extractors
    for split in ("val", "test"):
        data = load_run_data(cfg, split)
        gold = [r.relation for r in data.records]
        preds = {}
        for name, ex in extractors.items():
            t0 = time.perf_counter()
            preds[name] = ex.runtime.decide_records(data.records, batch_size=64).predictions
            out[f"{split}_{name}_seconds"] = time.perf_counter() - t0
            out[f"{split}_{name}_micro_f1"] = 100 * micro_prf(gold, preds[name], cfg.data.negative_label)[2]
        out[f"{split}_records"] = len(gold)
        out[f"{split}_changed_predictions"] = sum(a != b for a, b in zip(preds[first], preds[second], strict=True))
    return out


def quantized_int8(model):
    """A copy of ``model`` whose text encoder (most of the matrix products) has its ``nn.Linear`` layers int8
    dynamically quantised (prediction in fp32 only; the fusion layers' fast path reads their weights directly)."""
    import torch

    out = copy.deepcopy(model).eval()
    torch.ao.quantization.quantize_dynamic(out.encoder.text_model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return out


def compile_for_training(model) -> int:
    """``torch.compile`` (dynamic shapes) on the modules a canonical training step runs with gradients: the text
    layers above the frozen prefix and the fusion encoder. Returns how many modules."""
    layers = list(model.encoder.text_model.encoder.layer[model.frozen_prefix_layers:])
    if model.encoder.fusion is not None:
        layers.append(model.encoder.fusion)
    for module in layers:
        module.compile(dynamic=True)
    return len(layers)


class _CompiledLeanForward:
    """A :class:`~rocmre.modeling.lean_encoder.LeanBertForward` whose call runs under ``torch.compile``."""

    def __init__(self, lean) -> None:
        import torch

        self.lean = lean
        self.forward = torch.compile(lean.__call__, dynamic=True)

    def __call__(self, input_ids, attention_mask):
        return self.forward(input_ids, attention_mask)

    def clear(self) -> None:
        self.lean.clear()


def compile_for_prediction(model) -> None:
    """``torch.compile`` (dynamic shapes) on the eval-mode text encoder, the bulk of a prediction (the fusion
    layers' fused kernel does not compile with the bf16 weight copies swapped in)."""
    if model.encoder._lean_text is None:
        raise ValueError("compile_for_prediction expects a BERT text encoder (the lean forward)")
    model.encoder._lean_text = _CompiledLeanForward(model.encoder._lean_text)


def extra_levers(roc_config: str, train, test, steps: int, rounds: int, model_dir: str | None) -> dict:
    """The levers that did not pay, measured so that the results say so: ``torch.compile`` of a training step and of
    prediction, and int8 dynamic quantisation of prediction (speed, and micro-F1 on a trained model)."""
    import numpy as np
    import torch

    from rocmre.backbones.hardware import resolve_precision
    from rocmre.inference.extractor import PairInput, RelationExtractor
    from rocmre.modeling.model import RelationModel
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import build_model, make_runtime

    cfg = RunConfig.from_yaml(roc_config)
    out: dict = {}
    # -- training: eager and compiled canonical ROC steps, alternately on the same batches ------------------------
    sample = np.random.default_rng(2).choice(len(train), size=32 * (steps + 3), replace=False)
    timers, compiled_modules = {}, 0
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        model = build_model(cfg, train.labels.labels)
        runtime = make_runtime(model, cfg)
        feats = runtime.featurize([train.records[i] for i in sorted(sample)])
        if name == "compiled":
            compiled_modules = compile_for_training(model)
        timers[name] = StepTimer(cfg, feats, model, runtime, steps)
    all_steps: dict[str, list[float]] = {name: [] for name in timers}
    for i in range(steps + 3):
        for name, timer in timers.items():
            all_steps[name].append(timer.step(i))
    out["training"] = {"steps": steps, "compiled_modules": compiled_modules,
                       "warm_up_s": {k: sum(v[:3]) for k, v in all_steps.items()},
                       "step_s": {k: v[3:] for k, v in all_steps.items()}}
    print("compile, training:", {k: round(statistics.median(v[3:]), 3) for k, v in all_steps.items()}, flush=True)
    del timers
    # -- prediction: eager (the default path), compiled, int8 ------------------------------------------------------
    precision = resolve_precision(cfg.train.inference_precision)
    torch.manual_seed(0)
    model = build_model(cfg, train.labels.labels)
    extractors = {"default": RelationExtractor(model, precision=precision)}
    compiled = copy.deepcopy(model)
    compile_for_prediction(compiled)
    extractors["compiled"] = RelationExtractor(compiled, precision=precision)
    extractors["int8"] = RelationExtractor(quantized_int8(model), precision="fp32")
    records = [r for r in test.records if not r.has_image][:256]
    pairs = [PairInput(r.tokens, r.head.span, r.tail.span) for r in records]
    text = "Rafael Nadal gets engaged to girlfriend of 14 years , Mery Perello"
    head, tail = "Rafael Nadal", "Mery Perello"
    warm = {}
    for name, ex in extractors.items():  # compilation happens here (first shapes)
        warm[name] = _timed(lambda e=ex: (list(e.predict_batch(pairs[:64], batch_size=32)),
                                          e.predict(text, head, tail)))
    single: dict[str, list[float]] = {k: [] for k in extractors}
    batch: dict[str, list[float]] = {k: [] for k in extractors}
    for _ in range(rounds):
        for name, ex in extractors.items():
            single[name] += [1000 * _timed(lambda e=ex: e.predict(text, head, tail)) for _ in range(20)]
            batch[name].append(len(pairs) / _timed(lambda e=ex: list(e.predict_batch(pairs, batch_size=32))))
    out["prediction"] = {"precision": precision, "pairs": len(pairs), "rounds": rounds, "warm_up_s": warm,
                         "single_predict_ms": single, "pairs_per_s": batch}
    print("prediction p50 ms:", {k: round(statistics.median(v), 1) for k, v in single.items()}, flush=True)
    # -- int8 on a trained model: micro-F1 against the default precision ----------------------------------------
    if model_dir:
        run_cfg = RunConfig.from_yaml(Path(model_dir) / "run_config.yaml")
        trained = RelationModel.from_pretrained(model_dir)
        default_ex = RelationExtractor(trained, precision=resolve_precision(run_cfg.train.inference_precision))
        int8_ex = RelationExtractor(quantized_int8(trained), precision="fp32")
        out["int8_f1"] = {"model": model_dir, "default_precision": default_ex.runtime.precision,
                          **split_f1(run_cfg, {"default": default_ex, "int8": int8_ex})}
    return out


def update_results(results: str, commit_key: str, change) -> dict:
    """Apply ``change`` to the existing ``cpu_speed.json`` under ``results`` (every other figure kept), add this
    command to its command line and the current commit under ``commit_key``, and write the JSON and Markdown again."""
    kept = harness.load_results(Path(results), "cpu_speed")
    change(kept)
    kept["command"] += " && python benchmarks/cpu_speed.py " + shlex.join(sys.argv[1:])
    kept[commit_key] = git_commit()
    harness.write_results(Path(results), "cpu_speed", kept, render)
    return kept


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_metrics(folder: str | None) -> dict | None:
    if not folder:
        return None
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: train it first (--train) or give a finished run")
    out = json.loads(path.read_text(encoding="utf-8")) | {"folder": folder}
    run_config = Path(folder) / "run_config.yaml"
    if run_config.is_file():
        import yaml

        out["run_config"] = yaml.safe_load(run_config.read_text(encoding="utf-8"))
    return out


def config_differences(first: dict, second: dict) -> dict[str, tuple]:
    """``{"section.key": (first's value, second's value)}`` for every setting two run configs differ in (output and
    cache folders aside; defaults filled in)."""
    from rocmre.training.config import RunConfig
    from rocmre.training.config import config_differences as differences

    return differences(RunConfig.model_validate(first).model_dump(), RunConfig.model_validate(second).model_dump())


def recipe_differences(fast_config: dict, fp32_config: dict, switches: list[str] | None = None) -> list[str]:
    """The settings (``section.key``) in which an fp32 run differs from the fast run with ``switches`` applied
    (default: the fp32 lever): empty when the pair compares those switches alone."""
    from rocmre.training.config import apply_override

    want = json.loads(json.dumps(fast_config))
    for item in LEVERS[FP32] + ["train.inference_precision=fp32"] if switches is None else switches:
        apply_override(want, item)
    return list(config_differences(want, fp32_config))


def train_full(config: str, out: str, overrides: list[str]) -> None:
    cmd = [sys.executable, "-m", "rocmre", "train", "--config", config, "--output-dir", out, "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)


def parse_args(argv: list[str] | None):
    parser = harness.parser(__doc__, training=False, sets=False)
    parser.add_argument("--roc-config", default=str(REPO / "configs" / "mnre_roc.yaml"))
    parser.add_argument("--cls-config", default=str(REPO / "configs" / "mnre_cls.yaml"))
    parser.add_argument("--steps", type=int, default=24, help="timed training steps per row (after 3 warm-up)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the prediction timings")
    parser.add_argument("--ratio-only", action="store_true",
                        help="only the interleaved ROC / classifier step ratio; the other figures are kept")
    parser.add_argument("--prediction-only", action="store_true",
                        help="measure prediction only and replace those figures in the existing cpu_speed.json")
    parser.add_argument("--extra-levers-only", action="store_true",
                        help="measure torch.compile (training step, prediction) and int8 prediction into the existing "
                             "results (int8 micro-F1 on --precision-model)")
    parser.add_argument("--precision-model", default=None,
                        help="a trained model folder: its val/test micro-F1 predicted in fp32 and in bf16")
    parser.add_argument("--fast-run", default=None, help="a finished run of --roc-config as it is (metrics.json)")
    parser.add_argument("--fp32-run", default=None, help="a finished run of --roc-config with the fp32 lever")
    parser.add_argument("--train", action="store_true", help="train the missing full runs first (long)")
    parser.add_argument("--seed", type=int, default=None,
                        help="with --train/--train-only: both full runs with this seed instead of the config's "
                             "(a second seed-matched pair for the fast - fp32 delta)")
    parser.add_argument("--train-only", action="store_true",
                        help="train the missing full runs (--fast-run, --fp32-run) and stop; --render-only then reads "
                             "them into the results")
    parser.add_argument("--fp32-paused-seconds", type=float, default=0.0,
                        help="seconds the --fp32-run training was stopped (SIGSTOP) while it ran; subtracted from its "
                             "wall time, and said so in the results")
    parser.add_argument("--delta-pair", nargs=2, metavar=("FAST_METRICS", "FP32_METRICS"), default=None,
                        help="without --fp32-run: two metrics.json files of the same seed on the same hardware (e.g. a "
                             "GPU pair) that give val_micro_f1_delta_fast_vs_fp32; the Markdown names their hardware")
    parser.add_argument("--earlier-recipe-pair", nargs=2, metavar=("FAST_RUN", "FP32_RUN"), default=None,
                        help="without --fp32-run: a finished fast run and its fp32 run (run folders) of an earlier "
                             "canonical recipe, for the fp32 figures; the notes say how the recipes differ")
    parser.add_argument("--add-pair", nargs=2, metavar=("FAST_RUN", "FP32_RUN"), default=None,
                        help="with --render-only: one more seed-matched pair of full runs (e.g. trained with --seed); "
                             "the results keep every pair and the summary takes means over them "
                             "(--fp32-paused-seconds then applies to this pair's fp32 run)")
    parser.add_argument("--fp32-arithmetic-run", default=None,
                        help="an fp32 twin that keeps the fast config's model (frozen prefix) and turns off only the "
                             "computation switches: trained with --train/--train-only [--seed N]; with --render-only "
                             "added to the results beside the recorded fast run of its seed")

    return parser.parse_args(argv)


def render_only(args) -> None:
    """``--render-only``: no measuring; full runs (pairs, twins, a delta pair) applied to the existing results, the
    Markdown rewritten."""
    res = harness.load_results(Path(args.results), "cpu_speed")
    earlier = args.earlier_recipe_pair or (None if args.fp32_run else res.get("earlier_recipe_pair"))
    if args.add_pair or res.get("full_run_pairs"):
        from rocmre.training.config import RunConfig

        pairs = res.get("full_run_pairs") or [recorded_pair(res, RunConfig.from_yaml(args.roc_config).seed)]
        if args.add_pair:
            new = full_run_pair(*(run_metrics(f) for f in args.add_pair), args.fp32_paused_seconds)
            pairs = [p for p in pairs if p["fast_run"] != new["fast_run"]] + [new]
        apply_pairs(res, pairs)
        if args.fp32_arithmetic_run:
            new_twin = arithmetic_twin(run_metrics(args.fp32_arithmetic_run), pairs, args.roc_config)
            twins = [t for t in res.get("arithmetic_twins", []) if t["twin_run"] != new_twin["twin_run"]]
            apply_arithmetic_twins(res, [*twins, new_twin])
    elif args.fp32_arithmetic_run:
        raise SystemExit("--fp32-arithmetic-run needs seed-matched full runs in the results (--add-pair)")
    else:
        apply_full_runs(res, run_metrics(args.fast_run or res.get("fast_run")),
                        None if earlier else run_metrics(args.fp32_run or res.get("fp32_run")),
                        args.delta_pair or res.get("delta_pair"),
                        args.fp32_paused_seconds or res.get("fp32_run_paused_seconds", 0.0),
                        tuple(run_metrics(f) for f in earlier) if earlier else None)
        if not earlier:
            res.pop("earlier_recipe_pair", None)
    extra = [f"--{k.replace('_', '-')} {v}" for k, v in (("fast_run", args.fast_run), ("fp32_run", args.fp32_run))
             if v] + (["--delta-pair " + " ".join(args.delta_pair)] if args.delta_pair else []) + (
        [f"--fp32-paused-seconds {args.fp32_paused_seconds:g}"] if args.fp32_paused_seconds else []) + (
        ["--earlier-recipe-pair " + " ".join(args.earlier_recipe_pair)] if args.earlier_recipe_pair else []) + (
        ["--add-pair " + " ".join(args.add_pair)] if args.add_pair else []) + (
        [f"--fp32-arithmetic-run {args.fp32_arithmetic_run}"] if args.fp32_arithmetic_run else [])
    addition = " && python benchmarks/cpu_speed.py --render-only " + " ".join(extra)
    if extra and not res["command"].endswith(addition):
        res["command"] += addition
    harness.write_results(Path(args.results), "cpu_speed", res, render)


def train_runs(args) -> None:
    """``--train`` / ``--train-only``: the missing full runs (fast, fp32, the fp32 arithmetic twin)."""
    seed = [] if args.seed is None else [f"seed={args.seed}"]
    if args.fast_run and not (Path(args.fast_run) / "metrics.json").is_file():
        train_full(args.roc_config, args.fast_run, seed)
    if args.fp32_run and not (Path(args.fp32_run) / "metrics.json").is_file():
        train_full(args.roc_config, args.fp32_run, LEVERS[FP32] + ["train.inference_precision=fp32"] + seed)
    if args.fp32_arithmetic_run and not (Path(args.fp32_arithmetic_run) / "metrics.json").is_file():
        train_full(args.roc_config, args.fp32_arithmetic_run, ARITHMETIC_OFF + seed)


def measure_prediction(args, res: dict, roc_cfg, train, test) -> float:
    """Prediction figures into ``res["raw"]`` (measured first, so that the peak memory read afterwards is
    prediction's); returns that peak."""
    import torch

    from rocmre.backbones.hardware import resolve_precision
    from rocmre.inference.extractor import PairInput, RelationExtractor
    from rocmre.modeling.packed_linear import packing_disabled
    from rocmre.training.setup import build_model

    threads = torch.get_num_threads()
    # -- prediction (first, so that the peak memory read afterwards is prediction's) --------------
    # the canonical config's prediction precision (train.inference_precision, "auto": bf16 where native) is the
    # default path; fp32 rows beside it. Measurements are interleaved in rounds (medians), so that a slow spell of
    # the machine hits every row alike.
    precision = resolve_precision(roc_cfg.train.inference_precision)
    model = build_model(roc_cfg, train.labels.labels)
    ex = RelationExtractor(model, precision=precision)
    ex_fp32 = RelationExtractor(model, precision="fp32")
    model_10k = copy.deepcopy(model)
    ex_10k = RelationExtractor(model_10k, precision=precision)
    records = [r for r in test.records if not r.has_image][:256]
    pairs = [PairInput(r.tokens, r.head.span, r.tail.span) for r in records]
    for e in (ex, ex_fp32):
        list(e.predict_batch(pairs, batch_size=32))  # warm-up: entity types, description vectors
    # 10,000 relations: their description vectors are computed once (reported apart); each call then scores all
    many = {f"/synthetic/relation_{i}": [f"The head is linked to the tail by synthetic relation number {i}."]
            for i in range(10_000 - len(ex.relations))}
    t0 = time.perf_counter()
    ex_10k.add_relations(many)
    list(ex_10k.predict_batch(pairs[:32], batch_size=32))
    encode_10k_s = time.perf_counter() - t0
    feats = ex.runtime.featurize([ex.to_record(p) for p in pairs], with_labels=False)
    text_model = model.encoder.text_model
    pad = model.tokenizer.pad_token_id

    def bare_encoder(bf16: bool) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for s in range(0, len(feats), 32):
                chunk = [f.input_ids for f in feats[s:s + 32]]
                n = max(map(len, chunk))
                ids = torch.tensor([c + [pad] * (n - len(c)) for c in chunk])
                mask = (ids != pad).long()
                text_model(input_ids=ids, attention_mask=mask)
        return len(feats) / (time.perf_counter() - t0)

    def batch_predict(extractor) -> float:
        t0 = time.perf_counter()
        list(extractor.predict_batch(pairs, batch_size=32))
        return len(pairs) / (time.perf_counter() - t0)

    speeds: dict[str, list[float]] = {k: [] for k in ("bare", "bare_bf16", "default", "fp32", "default_10k",
                                                      "default_unpacked")}
    for _ in range(args.rounds):
        speeds["bare"].append(bare_encoder(False))
        speeds["bare_bf16"].append(bare_encoder(True))
        speeds["default"].append(batch_predict(ex))
        speeds["fp32"].append(batch_predict(ex_fp32))
        speeds["default_10k"].append(batch_predict(ex_10k))
        with packing_disabled():  # the same numbers through plain F.linear (the packed weights' gain)
            speeds["default_unpacked"].append(batch_predict(ex))
    text = "Rafael Nadal gets engaged to girlfriend of 14 years , Mery Perello"

    def latencies(extractor, n: int = 60) -> list[float]:
        extractor.predict(text, "Rafael Nadal", "Mery Perello")
        return [1000 * _timed(lambda: extractor.predict(text, "Rafael Nadal", "Mery Perello")) for _ in range(n)]

    # a reference for the machine's state: the bare Hugging Face encoder (bf16 autocast) on the same single input
    single_ids = torch.tensor([ex.runtime.featurize([ex.to_record(PairInput(text, "Rafael Nadal", "Mery Perello"))],
                                                    with_labels=False)[0].input_ids])

    def bare_latencies(n: int = 20) -> list[float]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            text_model(input_ids=single_ids, attention_mask=torch.ones_like(single_ids))
            return [1000 * _timed(lambda: text_model(input_ids=single_ids,
                                                     attention_mask=torch.ones_like(single_ids)))
                    for _ in range(n)]

    lat: dict[str, list[float]] = {k: [] for k in ("default", "fp32", "default_10k", "default_1_thread",
                                                   "bare_encoder_bf16", "default_unpacked")}
    for _ in range(args.rounds):  # interleaved too
        lat["bare_encoder_bf16"] += bare_latencies(20)
        lat["default"] += latencies(ex, 20)
        with packing_disabled():
            lat["default_unpacked"] += latencies(ex, 20)
        lat["fp32"] += latencies(ex_fp32, 20)
        lat["default_10k"] += latencies(ex_10k, 20)
        torch.set_num_threads(1)
        lat["default_1_thread"] += latencies(ex, 20)
        torch.set_num_threads(threads)
    # 10,000 relations vs 23: each batch of 32 through both extractors back to back (order alternating), so that
    # the machine's slow spells, which swing whole rounds by 20 %, hit both members of every pair alike
    paired = {"relations_23_s": [], "relations_10k_s": []}
    for r in range(args.rounds):
        for start in range(0, len(pairs), 32):
            chunk = pairs[start:start + 32]
            order = (("relations_23_s", ex), ("relations_10k_s", ex_10k))
            for key, extractor in (order if (r + start // 32) % 2 == 0 else order[::-1]):
                paired[key].append(_timed(lambda e=extractor, c=chunk: list(e.predict_batch(c, batch_size=32))))
    predict_peak = peak_rss_mb()
    med = {k: statistics.median(v) for k, v in speeds.items()}
    print(f"bare encoder {med['bare']:.1f} pairs/s, predict_batch {med['default']:.1f} pairs/s ({precision}), "
          f"10k {med['default_10k']:.1f} pairs/s, single p50 {statistics.median(lat['default']):.1f} ms", flush=True)
    res["raw"]["prediction"] = {
        "pairs": len(pairs), "precision": precision, "rounds": args.rounds, "pairs_per_s": speeds,
        "single_predict_ms": lat, "relations_10k": len(ex_10k.relations), "encode_10k_descriptions_s": encode_10k_s,
        "retrieval_10k_paired_batches": paired,
    }
    del model_10k, ex_10k
    if args.precision_model:
        res["raw"]["prediction_precision_f1"] = precision_f1(args.precision_model)
    return predict_peak


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.render_only:
        return render_only(args)
    if args.train or args.train_only:
        train_runs(args)
        if args.train_only:
            return
    import numpy as np
    import torch

    from rocmre.backbones.hardware import bf16_supported
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import build_model, load_run_data, make_runtime

    threads = torch.get_num_threads()
    roc_cfg = RunConfig.from_yaml(args.roc_config)
    train, val, test = (load_run_data(roc_cfg, s) for s in ("train", "val", "test"))
    res: dict = {"raw": {}}
    if args.extra_levers_only:  # the existing results keep every other figure
        levers = extra_levers(args.roc_config, train, test, args.steps, args.rounds, args.precision_model)
        update_results(args.results, "extra_levers_commit", lambda kept: kept["raw"].update(extra_levers=levers))
        return
    if args.ratio_only:  # the existing results keep every other figure
        ratio = canonical_step_ratio(args.roc_config, args.cls_config, train, args.steps)

        def with_ratio(kept: dict) -> None:
            kept["raw"]["canonical_step_ratio"] = ratio
            kept["summary"]["roc_over_cls_step"] = ratio["ratio_of_means"]

        update_results(args.results, "ratio_commit", with_ratio)
        return
    predict_peak = measure_prediction(args, res, roc_cfg, train, test)
    if args.prediction_only:  # the existing results keep their training rows; the prediction figures are replaced
        def with_prediction(kept: dict) -> None:
            kept["raw"].update(res["raw"])
            pred = kept["raw"]["prediction"]
            kept.setdefault("training_rows_commit", kept["summary"]["commit"])
            kept["summary"].update({
                "predict_over_bare_encoder": _median(pred, "default") / _median(pred, "bare"),
                "single_predict_ms_p50": statistics.median(pred["single_predict_ms"]["default"]),
                "retrieval_10k_overhead": retrieval_overhead(pred),
                "predict_peak_rss_mb": predict_peak, "commit": git_commit()})
            kept["prediction_date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

        update_results(args.results, "prediction_commit", with_prediction)
        return

    # -- training steps, lever by lever -----------------------------------------------------------
    rows = {}
    sample = np.random.default_rng(0).choice(len(train), size=32 * (args.steps + 3), replace=False)
    for paradigm, config in (("roc", args.roc_config), ("classifier", args.cls_config)):
        for lever, overrides in LEVERS.items():
            if paradigm == "classifier" and lever in ROC_ONLY:
                continue
            cfg = RunConfig.from_yaml(config, overrides)
            torch.manual_seed(0)
            model = build_model(cfg, train.labels.labels)
            runtime = make_runtime(model, cfg)
            feats = runtime.featurize([train.records[i] for i in sorted(sample)])
            times = time_steps(cfg, feats, model, runtime, args.steps)
            rows[f"{paradigm} | {lever}"] = {"paradigm": paradigm, "lever": lever, "overrides": overrides,
                                             "step_s_median": statistics.median(times), "step_s": times}
            print(f"{paradigm:10s} {lever:55s} {statistics.median(times):.3f} s/step", flush=True)
            del model, runtime
    res["raw"]["training_steps"] = rows
    ratio = canonical_step_ratio(args.roc_config, args.cls_config, train, args.steps)
    res["raw"]["canonical_step_ratio"] = ratio
    train_peak_steps = peak_rss_mb()
    cfg = RunConfig.from_yaml(args.roc_config)
    torch.manual_seed(0)
    model = build_model(cfg, train.labels.labels)
    runtime = make_runtime(model, cfg)
    feats = runtime.featurize([train.records[i] for i in sorted(sample)])
    res["raw"]["step_profile"] = profile_steps(cfg, feats, model, runtime, min(args.steps, 8))
    del model, runtime

    # -- validation scoring -----------------------------------------------------------------------
    cfg = RunConfig.from_yaml(args.roc_config)
    model = build_model(cfg, train.labels.labels)
    runtime = make_runtime(model, cfg)
    val_feats = runtime.featurize(val.records, with_labels=False)
    t0 = time.perf_counter()
    runtime.score(val_feats, cfg.train.eval_batch_size)
    val_s = time.perf_counter() - t0

    fast_key = f"roc | {_lever_of(cfg)}"
    steps_per_epoch = -(-len(train) // cfg.train.batch_size)
    epochs = cfg.train.epochs
    fp32_step = rows[f"roc | {FP32}"]["step_s_median"]
    projected_fp32 = epochs * (steps_per_epoch * fp32_step + val_s) / 60
    fast = run_metrics(args.fast_run)
    fp32 = run_metrics(args.fp32_run)
    cls_key = f"classifier | {_lever_of(RunConfig.from_yaml(args.cls_config), cls=True)}"
    pred = res["raw"]["prediction"]
    res["summary"] = {
        "full_training_minutes": None,
        "fp32_full_training_minutes": None,
        "val_micro_f1_delta_fast_vs_fp32": None,
        "roc_over_cls_step": ratio["ratio_of_means"],
        "predict_over_bare_encoder": _median(pred, "default") / _median(pred, "bare"),
        "single_predict_ms_p50": statistics.median(pred["single_predict_ms"]["default"]),
        "retrieval_10k_overhead": retrieval_overhead(pred),
        "train_peak_rss_mb": train_peak_steps,
        "predict_peak_rss_mb": predict_peak,
        "commit": git_commit(),
    }
    res["notes"] = {"fast_config": fast_key, "classifier_row": cls_key}
    res["projected_fp32_full_training_minutes"] = projected_fp32
    apply_full_runs(res, fast, fp32, args.delta_pair, args.fp32_paused_seconds)
    res.update({
        "command": harness.command_line("cpu_speed.py", argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {platform.processor()}, {os.cpu_count()} cores, torch threads {threads}, "
                   f"bf16 native: {bf16_supported()}",
        "torch": torch.__version__, "threads": threads, "val_scoring_seconds": val_s, "val_records": len(val),
        "steps_per_epoch": steps_per_epoch, "epochs": epochs,
    })
    harness.write_results(Path(args.results), "cpu_speed", res, render)


def _lever_of(cfg, cls: bool = False) -> str:
    """The LEVERS row a config matches (classifiers ignore the description lever)."""
    from rocmre.training.config import RunConfig, apply_override

    def values(run) -> dict:
        out = {}
        for key in _OFF:
            section, name = key.split(".")
            v = getattr(getattr(run, section), name)
            out[key] = "bf16" if key == "train.mixed_precision" and v == "auto" else v
        if cls:
            out.pop("train.description_refresh_steps")
        return out

    mine = values(cfg)
    for name, overrides in LEVERS.items():
        if cls and name in ROC_ONLY:
            continue
        data = cfg.model_dump(mode="json")
        for item in overrides:
            apply_override(data, item)
        if values(RunConfig.model_validate(data)) == mine:
            return name
    raise SystemExit(f"the config's speed settings match no measured lever: {cfg.train}, {cfg.model}")


def _ratio_label(res: dict) -> str:
    ratio = res["raw"].get("canonical_step_ratio")
    if ratio is None:  # results written before the interleaved measurement: medians of the lever rows
        return (f"ROC step / classifier step (medians of the rows `{res['notes']['fast_config']}` vs "
                f"`{res['notes']['classifier_row']}`)")
    m = ratio["mean_s"]
    return (f"ROC step / classifier step (`roc_over_cls_step`: canonical configs, steps timed alternately on the same "
            f"batches, means over {ratio['steps']} steps = {ratio['steps'] // ratio['description_refresh_steps']} "
            f"description-refresh cycles: {m['roc']:.3f} / {m['classifier']:.3f} s; medians "
            f"{ratio['median_s']['roc']:.3f} / {ratio['median_s']['classifier']:.3f} s)")


def _fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def render(res: dict) -> str:
    s = res["summary"]
    pred = res["raw"]["prediction"]
    lines = ["# Speed on 2 CPU cores", "",
             f"Produced by `{res['command']}` at commit `{s['commit']}` on {res['machine']} ({res['date']}"
             + (f"; training rows at commit `{res['training_rows_commit']}`, prediction rows measured "
                f"{res['prediction_date']}" if res.get("training_rows_commit") else "")
             + (f"; ROC / classifier step ratio at commit `{res['ratio_commit']}`" if res.get("ratio_commit") else "")
             + "), "
             f"torch {res['torch']}. Training-step rows: median of timed steps (after 3 warm-up steps) on the same "
             "random MNRE train batches, each row a fresh model; every figure comes from one process, so ratios "
             "compare like with like. Other load on the machine slows every figure.", "",
             "## Summary (targets from the speed issue)", "",
             "| measure | value | target |", "| --- | --- | --- |"]
    pairs = res.get("full_run_pairs")
    rows = [
        ("full ROC training, fast config, 6 epochs (`full_training_minutes`"
         + (f"; the slowest of {len(pairs)} runs, seeds " + ", ".join(str(p["seed"]) for p in pairs) + ": "
            + ", ".join(f"{p['fast_minutes']:.1f}" for p in pairs) + " min; pairs below" if pairs
            else f"; `{res['fast_run']}`, val micro-F1 {100 * res['fast_run_val_micro_f1']:.2f}"
            if res.get("fast_run") and res.get("fast_run_val_micro_f1") is not None else "") + ")",
         f"{_fmt(s['full_training_minutes'], '.1f')} min", "<= 20"),
        (f"the same in fp32 (`fp32_full_training_minutes`; {res['notes']['fp32_full_training_minutes']})",
         f"{_fmt(s['fp32_full_training_minutes'], '.1f')} min", ""),
        (f"val micro-F1, fast - fp32 (points; {res['notes']['val_micro_f1_delta_fast_vs_fp32']})",
         _fmt(s["val_micro_f1_delta_fast_vs_fp32"], "+.2f"), "within 0.5"),
        (_ratio_label(res), f"{s['roc_over_cls_step']:.2f}x", "<= 1.10x"),
        (f"`predict_batch` ({pred['precision']}, the canonical config's prediction precision) / bare fp32 text "
         "encoder forward (batch 32, same inputs)", f"{s['predict_over_bare_encoder']:.2f}x", ">= 0.95x"),
        (f"single `predict`, text only, p50 ({pred['precision']}, {res.get('threads', 2)} threads)",
         f"{s['single_predict_ms_p50']:.1f} ms", "<= 15 ms"),
        ("10,000 relations vs 23: extra time per pair in `predict_batch`"
         + (f" (median over {len(pred['retrieval_10k_paired_batches']['relations_23_s'])} batches of 32 of the time "
            "ratio, each batch through both back to back)" if pred.get("retrieval_10k_paired_batches") else
            " (ratio of the rounds' median throughputs)"),
         f"{100 * s['retrieval_10k_overhead']:+.1f} %", "<= 5 %"),
        (f"peak memory, training (`train_peak_rss_mb`; {res['notes']['train_peak_rss_mb']})",
         f"{_fmt(s['train_peak_rss_mb'], '.0f')} MB", "report"),
        ("peak memory, prediction incl. 10k relations", f"{s['predict_peak_rss_mb']:.0f} MB", "report"),
        ("for comparison: `predict_batch` in fp32 / bare fp32 encoder",
         f"{_median(pred, 'fp32') / _median(pred, 'bare'):.2f}x", ""),
        (f"for comparison: `predict_batch` ({pred['precision']}) / bare encoder under bf16 autocast",
         f"{_median(pred, 'default') / _median(pred, 'bare_bf16'):.2f}x", ""),
        ("for comparison: single `predict` in fp32, p50",
         f"{statistics.median(pred['single_predict_ms']['fp32']):.1f} ms", ""),
        (f"for comparison: single `predict` ({pred['precision']}) on 1 thread, p50",
         f"{statistics.median(pred['single_predict_ms']['default_1_thread']):.1f} ms", ""),
    ]
    single = pred["single_predict_ms"]
    if "bare_encoder_bf16" in single:  # results from before this row was measured lack it
        rows += [(f"single `predict` ({pred['precision']}), p10 / p90 (the spread over {len(single['default'])} "
                  "calls)", f"{_pct(single['default'], 10):.1f} / {_pct(single['default'], 90):.1f} ms", ""),
                 ("machine reference: the bare Hugging Face text encoder (bf16 autocast) on the same single input, "
                  "p50 (a slow spell of the machine shows here too)",
                  f"{statistics.median(single['bare_encoder_bf16']):.1f} ms", "")]
    if "default_unpacked" in single:
        rows += [("for comparison: without packed bf16 weights (`modeling/packed_linear.py`; same numbers): "
                  "`predict_batch` / bare fp32 encoder; single `predict` p50",
                  f"{_median(pred, 'default_unpacked') / _median(pred, 'bare'):.2f}x; "
                  f"{statistics.median(single['default_unpacked']):.1f} ms", "")]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    if pairs:
        lines += render_pairs(pairs)
    lines += render_arithmetic_twins(res)
    lines += [
             "", "## Training step by lever (batch 32)", "",
             "Median and mean of the timed steps; the mean counts ROC's description-refresh steps at their share.", "",
             "| paradigm | lever | s / step (median) | s / step (mean) | examples / s (median) | vs fp32 ROC (median) "
             "|",
             "| --- | --- | --- | --- | --- | --- |"]
    fp32 = res["raw"]["training_steps"][f"roc | {FP32}"]["step_s_median"]
    for r in res["raw"]["training_steps"].values():
        mean = statistics.mean(r["step_s"]) if r.get("step_s") else None
        lines.append(f"| {r['paradigm']} | {r['lever']} (`{' '.join(r['overrides'])}`) | {r['step_s_median']:.3f} | "
                     f"{_fmt(mean, '.3f')} | {32 / r['step_s_median']:.1f} | {fp32 / r['step_s_median']:.2f}x |")
    prof = res["raw"].get("step_profile")
    if prof:
        lines += ["", f"## Where a canonical ROC step goes (torch profiler over {prof['steps']} steps, "
                  f"{prof['wall_s_per_step']:.3f} s a step with the profiler on)", "",
                  "| part | s / step | share |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v:.3f} | {100 * v / prof['wall_s_per_step']:.0f} % |"
                  for k, v in prof["seconds_per_step"].items()]
    lines += ["", "## Raw timings", "",
              f"- validation scoring: {res['val_records']} records in {res['val_scoring_seconds']:.1f} s",
              f"- {res['steps_per_epoch']} steps per epoch, {res['epochs']:g} epochs; fp32 projection "
              f"{res['projected_fp32_full_training_minutes']:.1f} min",
              f"- full runs: fast `{res['fast_run']}` (val micro-F1 {_fmt(res['fast_run_val_micro_f1'], '.4f')}), "
              f"fp32 `{res['fp32_run']}` (val micro-F1 {_fmt(res['fp32_run_val_micro_f1'], '.4f')})" if not pairs
              else f"- full runs: {len(pairs)} seed-matched pairs (table above)",
              f"- prediction on {pred['pairs']} test pairs without images, medians of {pred['rounds']} interleaved "
              "rounds (pairs/s): " + ", ".join(f"{k} {_median(pred, k):.1f}" for k in pred["pairs_per_s"])
              + f"; {pred['relations_10k']} relations' description vectors took "
              f"{pred['encode_10k_descriptions_s']:.1f} s, once",
              "- single predict p50 (ms): " + ", ".join(f"{k} {statistics.median(v):.1f}"
                                                       for k, v in pred["single_predict_ms"].items())]
    paired = pred.get("retrieval_10k_paired_batches")
    if paired:
        a, b = sum(paired["relations_23_s"]), sum(paired["relations_10k_s"])
        lines.append(f"- 10k relations, paired batches: {len(paired['relations_23_s'])} batches, {a:.1f} s against 23 "
                     f"relations and {b:.1f} s against 10k in all (ratio of the sums {100 * (b / a - 1):+.1f} %)")
    f1 = res["raw"].get("prediction_precision_f1")
    if f1:
        lines += ["", f"## Prediction precision on a trained model (`{f1['model']}`)", "",
                  "| split | fp32 micro-F1 | bf16 micro-F1 | predictions changed | fp32 s | bf16 s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for split in ("val", "test"):
            lines.append(f"| {split} | {f1[f'{split}_fp32_micro_f1']:.2f} | {f1[f'{split}_bf16_micro_f1']:.2f} | "
                         f"{f1[f'{split}_changed_predictions']} of {f1[f'{split}_records']} | "
                         f"{f1[f'{split}_fp32_seconds']:.1f} | {f1[f'{split}_bf16_seconds']:.1f} |")
    extra = res["raw"].get("extra_levers")
    if extra:
        lines += render_extra_levers(extra, res.get("extra_levers_commit"))
    return "\n".join(lines)


def render_extra_levers(extra: dict, commit: str | None) -> list[str]:
    """The Markdown section of :func:`extra_levers`."""
    tr, pr = extra["training"], extra["prediction"]
    med = {k: statistics.median(v) for k, v in tr["step_s"].items()}
    lines = ["", "## Levers measured and not kept: torch.compile, int8 prediction"
             + (f" (commit `{commit}`)" if commit else ""), "",
             f"Training: the canonical ROC step eager and with `torch.compile(dynamic=True)` on the "
             f"{tr['compiled_modules']} modules that train (text layers above the frozen prefix, fusion), stepping "
             f"alternately on the same {tr['steps']} batches after 3 warm-up steps.", "",
             "| training step | s / step (median) | s / step (mean) | first 3 steps (compilation) |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {med[k]:.3f} | {statistics.mean(v):.3f} | {tr['warm_up_s'][k]:.1f} s |"
              for k, v in tr["step_s"].items()]
    lines += ["", f"Prediction ({pr['pairs']} test pairs, batch 32, and single calls; {pr['rounds']} interleaved "
              f"rounds): the default path ({pr['precision']}), its eval-mode text encoder (the lean forward) under "
              "`torch.compile(dynamic=True)`, "
              "and int8 dynamic quantisation of the text encoder's `nn.Linear` layers (fp32 activations).", "",
              "| prediction | single `predict` p50 | `predict_batch` pairs/s (median) | first calls (compilation) |",
              "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {statistics.median(pr['single_predict_ms'][k]):.1f} ms | "
              f"{statistics.median(pr['pairs_per_s'][k]):.1f} | {pr['warm_up_s'][k]:.1f} s |"
              for k in pr["single_predict_ms"]]
    f1 = extra.get("int8_f1")
    if f1:
        lines += ["", f"int8 on a trained model (`{f1['model']}`) against its default precision "
                  f"({f1['default_precision']}):", "",
                  "| split | default micro-F1 | int8 micro-F1 | predictions changed | default s | int8 s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {sp} | {f1[f'{sp}_default_micro_f1']:.2f} | {f1[f'{sp}_int8_micro_f1']:.2f} | "
                  f"{f1[f'{sp}_changed_predictions']} of {f1[f'{sp}_records']} | {f1[f'{sp}_default_seconds']:.1f} | "
                  f"{f1[f'{sp}_int8_seconds']:.1f} |" for sp in ("val", "test")]
    return lines


if __name__ == "__main__":
    main()
