"""What every benchmark script shares: variants (a config plus overrides), a seeds loop of ``rocmre train`` runs,
mean ± std and confidence intervals, the run's metadata, the common options, and writing a results file as JSON,
Markdown and a plot, or re-rendering the Markdown and plot from the JSON (``--render-only``).

Each script keeps only its own protocol (what it trains, how it scores, what it renders)::

    parser = harness.parser(__doc__, variants="roc", seeds="1,2,3", out_root="runs/x")
    args = parser.parse_args(argv)
    if args.render_only:
        return harness.render_only(Path(args.results), "x", render, plot)
    runs = [harness.Run(v.with_seed(s), out_root / f"{v.name}-s{s}") for v in chosen for s in seeds]
    harness.train_all(runs, args.set, args.jobs, args.force)
    ...
    harness.write_results(Path(args.results), "x", payload, render, plot)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for _p in (str(REPO / "src"), str(HERE)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

RESULTS = HERE / "results"
#: what a Markdown renderer returns: its lines, or the whole text
Rendered = list[str] | str


# --- variants ----------------------------------------------------------------------------------------------------

@dataclass
class Variant:
    """One recipe of a benchmark: a base config plus ``section.key=value`` overrides, trained once per seed (or fold).
    ``baseline``: the variant it is compared with, where the benchmark pairs rows (mnre: the classifier trained with
    the same recipe)."""

    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    title: str = ""
    baseline: str = "classifier"

    def with_overrides(self, *extra: str, name: str | None = None) -> Variant:
        """The same recipe with ``extra`` overrides after its own (and another ``name``, e.g. per seed or fold)."""
        return replace(self, name=name or self.name, overrides=[*self.overrides, *extra])

    @property
    def paradigm(self) -> str:
        """``roc`` or ``classifier``: the config's model type after the overrides."""
        for o in reversed(self.overrides):
            if o.startswith("model.model_type="):
                return o.split("=", 1)[1].strip()
        import yaml

        data = yaml.safe_load((REPO / self.config).read_text(encoding="utf-8")) or {}
        return str(data.get("model", {}).get("model_type", "roc"))


def parse_variant(spec: str, default_baseline: str = "classifier") -> Variant:
    """``NAME[@BASELINE]=CONFIG[;override;override...]`` -> a variant (``--add-variant``)."""
    head, sep, rest = spec.partition("=")
    name, _, baseline = head.partition("@")
    parts = [p.strip() for p in rest.split(";") if p.strip()]
    if not sep or not name.strip() or not parts or ("@" in head and not baseline.strip()):
        raise ValueError(f"--add-variant {spec!r}: expected NAME[@BASELINE]=CONFIG[;section.key=value...]")
    bad = [o for o in parts[1:] if "=" not in o]
    if bad:
        raise ValueError(f"--add-variant {spec!r}: overrides {bad} are not section.key=value")
    return Variant(name.strip(), parts[0], parts[1:], name.strip(), baseline.strip() or default_baseline)


def split_list(text: str, cast: Callable[[str], Any] = str) -> list:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (each item through ``cast``)."""
    return [cast(x.strip()) for x in text.split(",") if x.strip()]


def choose(parser: argparse.ArgumentParser, text: str, known: Iterable[str], what: str) -> list[str]:
    """The comma-separated names of ``text``, or a parser error naming the unknown ones and the known ones."""
    known = list(known)
    names = split_list(text)
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown {what} {unknown}; choose from {known}")
    return names


# --- statistics --------------------------------------------------------------------------------------------------

def mean_std(values: Iterable[float | None]) -> dict[str, float | None]:
    """Mean and sample standard deviation of the values that are not None (std 0 for one value; None for none)."""
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0}


def mean_ci(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
            seed: int = 0) -> dict[str, float | None]:
    """Mean of ``values`` with a percentile bootstrap interval of the mean (seeds or folds resampled)."""
    import numpy as np

    vals = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if not len(vals):
        return {"mean": None, "low": None, "high": None}
    draws = np.random.default_rng(seed).choice(vals, size=(resamples, len(vals))).mean(1)
    tail = 100 * (1 - confidence) / 2
    return {"mean": float(vals.mean()), "low": float(np.percentile(draws, tail)),
            "high": float(np.percentile(draws, 100 - tail))}


def paired_ci(gold: Sequence[str], a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], negative_label: str,
              resamples: int, seed: int = 0) -> dict:
    """A - B in micro-F1 points with its 95 % CI: the paired bootstrap over records of
    :mod:`rocmre.evaluation.bootstrap`, each system's predictions (one list per run, e.g. per seed) pooled."""
    from rocmre.evaluation.bootstrap import pooled_paired_bootstrap

    return pooled_paired_bootstrap(gold, list(a), list(b), negative_label, resamples, seed).to_dict()


# --- training ----------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One training: a variant (seed or fold already in its overrides) into ``folder``."""

    variant: Variant
    folder: Path


def git_commit() -> str:
    """``$ROCMRE_COMMIT`` (a machine without git), else the repository's HEAD, else ``unknown``."""
    env = os.environ.get("ROCMRE_COMMIT")
    if env:
        return env
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_logged(cmd: list[str], out: Path, threads: int, what: str) -> float:
    """Run ``cmd`` from the repository with ``threads`` CPU threads, its output in ``out/train.log`` (the command
    on the first line); minutes taken, or ``RuntimeError`` naming the log."""
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=path)
    start = time.time()
    with open(out / "train.log", "w") as log:
        log.write(shlex.join(cmd) + "\n")
        log.flush()
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed; see {out / 'train.log'}")
    return (time.time() - start) / 60


def train_command(v: Variant, folder: Path, extra: Sequence[str] = ()) -> list[str]:
    """``python -m rocmre train`` of ``v`` into ``folder``, the user's ``--set`` (``extra``) after its overrides."""
    cmd = [sys.executable, "-m", "rocmre", "train", "--config", str(REPO / v.config), "--quiet",
           "--output-dir", str(folder)]
    for o in [*v.overrides, *extra]:
        cmd += ["--set", o]
    return cmd


def train_variant(v: Variant, out_root: Path, extra: list[str], threads: int, force: bool) -> tuple[str, float]:
    """Train ``v`` into ``out_root/<name>`` unless its ``metrics.json`` exists (``force``: again); (name, minutes)."""
    out = out_root / v.name
    if (out / "metrics.json").is_file() and not force:
        return v.name, 0.0
    out.mkdir(parents=True, exist_ok=True)
    return v.name, run_logged(train_command(v, out, extra), out, threads, f"training {v.name}")


def threads_per_job(jobs: int) -> int:
    return max(1, (os.cpu_count() or 2) // max(1, jobs))


def train_all(runs: Sequence[Run], extra: list[str], jobs: int, force: bool) -> None:
    """Train every run (``jobs`` side by side, the CPU threads shared out); stops naming every failed log."""
    threads = threads_per_job(jobs)
    failed = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(train_variant, r.variant.with_overrides(name=r.folder.name), r.folder.parent, extra,
                               threads, force) for r in runs]
        for f in futures:
            try:
                name, minutes = f.result()
                print(f"trained {name} in {minutes:.1f} min", flush=True)
            except RuntimeError as e:
                failed.append(str(e))
    if failed:
        raise SystemExit("training failed:\n" + "\n".join(failed))


# --- options and metadata ----------------------------------------------------------------------------------------

def parser(doc: str | None, *, variants: str | None = None, seeds: str | None = None, out_root: str | None = None,
           training: bool = True, sets: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark shares: ``--results``, ``--render-only``, with ``sets`` ``--set``; with
    ``variants`` / ``seeds`` / ``out_root`` defaults, ``--variants``, ``--seeds``, ``--out-root``; with ``training``,
    ``--jobs``, ``--force``, ``--skip-train``, ``--bundle`` and ``--eval-limit``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if variants is not None:
        p.add_argument("--variants", default=variants, help="comma-separated variant names")
    if seeds is not None:
        p.add_argument("--seeds", default=seeds, help="comma-separated training seeds")
    if out_root is not None:
        p.add_argument("--out-root", default=out_root, help="where the trained models go")
    p.add_argument("--results", default=str(RESULTS), help="where the results files go")
    if sets:
        p.add_argument("--set", action="append", default=[], help="override for every run: section.key=value")
    p.add_argument("--render-only", action="store_true",
                   help="rewrite the Markdown (and plot) from the results JSON: no training, no scoring")
    if training:
        p.add_argument("--jobs", type=int, default=1, help="trainings run side by side")
        p.add_argument("--force", action="store_true", help="retrain models that already exist")
        p.add_argument("--skip-train", action="store_true", help="only evaluate existing models")
        p.add_argument("--bundle", default=None,
                       help="a folder made by benchmarks/offline_bundle.py (data, caches, text backbones as "
                            "<bundle>/<backbone>) for a machine without the embedded-model packages")
        p.add_argument("--eval-limit", type=int, default=None,
                       help="score only a seeded subset of val/test (smoke runs; never for results)")
    return p


BUNDLE_NOTE = ("offline bundle from benchmarks/offline_bundle.py --fp16: minilm-l6 weights stored in fp16 and trained "
               "in fp32, entity types and image features precomputed by the same code")


def use_bundle(bundle: str | None) -> Path | None:
    """Point the data and cache folders at an offline bundle (``--bundle``); its resolved path, or None."""
    if not bundle:
        return None
    path = Path(bundle).resolve()
    os.environ["ROCMRE_DATA"] = str(path / "data")
    os.environ["ROCMRE_CACHE"] = str(path / "cache")
    return path


def command_line(script: str, argv: Sequence[str] | None) -> str:
    """How this run was started, for the results (``argv`` None: this process's own arguments)."""
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{script}", *args])


def run_meta(script: str, argv: Sequence[str] | None, eval_limit: int | None = None) -> dict[str, Any]:
    """What every results file says of its run: commit, machine, torch, date, command (and a smoke-run warning)."""
    import torch

    from rocmre.backbones.hardware import machine_description

    meta = {"commit": git_commit(), "machine": machine_description(), "torch": torch.__version__,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command_line(script, argv)}
    if eval_limit:
        meta["warning"] = f"smoke run: val/test limited to {eval_limit} records; not a result"
    return meta


# --- results files -----------------------------------------------------------------------------------------------

def rounded(value: Any, digits: int = 6) -> Any:
    """``value`` with every float in it rounded to ``digits`` decimals (dicts and lists walked)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def dump_rows_per_line(payload: dict) -> str:
    """JSON with one top-level key per line and each element of a top-level list on a line of its own (thousands
    of rows stay readable and diffable without an indented file of millions of lines)."""
    parts = []
    for key, value in payload.items():
        if isinstance(value, list) and value:
            body = "[\n" + ",\n".join("  " + json.dumps(v) for v in value) + "\n ]"
        else:
            body = json.dumps(value, indent=2).replace("\n", "\n ")
        parts.append(f" {json.dumps(key)}: {body}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def dump_indented(payload: dict) -> str:
    return json.dumps(payload, indent=2) + "\n"


def _text(rendered: Rendered) -> str:
    return (rendered if isinstance(rendered, str) else "\n".join(rendered)) + "\n"


def write_results(results: Path, name: str, payload: dict, render: Callable[[dict], Rendered],
                  plot: Callable[[dict, Path], Any] | None = None,
                  dump: Callable[[dict], str] = dump_indented) -> None:
    """``<results>/<name>.json`` (``dump`` of ``payload``), ``<name>.md`` (``render``) and ``<name>.png`` (``plot``)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(dump(payload), encoding="utf-8")
    (results / f"{name}.md").write_text(_text(render(payload)), encoding="utf-8")
    if plot is not None:
        plot(payload, results / f"{name}.png")
    print(f"wrote {results / name}.md, .json" + (" and .png" if plot else ""), flush=True)


def load_results(results: Path, name: str) -> dict:
    path = results / f"{name}.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: nothing to render")
    return json.loads(path.read_text(encoding="utf-8"))


def render_only(results: Path, name: str, render: Callable[[dict], Rendered],
                plot: Callable[[dict, Path], Any] | None = None) -> dict:
    """``--render-only``: the Markdown (and plot) of ``<results>/<name>.json`` again; the JSON is returned."""
    payload = load_results(results, name)
    (results / f"{name}.md").write_text(_text(render(payload)), encoding="utf-8")
    if plot is not None:
        plot(payload, results / f"{name}.png")
    print(f"rendered {results / name}.md" + (" and .png" if plot else "") + f" from {name}.json", flush=True)
    return payload


# --- formatting --------------------------------------------------------------------------------------------------

def pm(stat: dict, scale: float = 1.0, digits: int = 2) -> str:
    """``mean ± std`` of a :func:`mean_std` dict (times ``scale``), or ``-``."""
    if stat.get("mean") is None:
        return "-"
    return f"{scale * stat['mean']:.{digits}f} ± {scale * stat['std']:.{digits}f}"


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction in percent, or ``-``."""
    return "-" if x is None else f"{100 * x:.{digits}f}"


def fmt(x: float | None, spec: str = ".2f") -> str:
    """``x`` formatted, or ``-`` (``+ 0.0``: no ``-0.00``)."""
    return "-" if x is None else format(x + 0.0, spec)


def ci_text(c: dict | None) -> str:
    """``observed [low, high]`` of a bootstrap result dict, signed, or ``-``."""
    return "-" if c is None else f"{c['observed']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]"


def save_figure(fig: Any, path: Path) -> Path:
    """Write a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
