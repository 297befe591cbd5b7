"""``rocmre predict --ray``: the local command's rows, computed by a pool of Ray actors (Ray Data).
Needs ``rocmre[ray]`` (imported only when a run starts). Workers build rows with
:func:`rocmre.inference.batch.predict_rows`; the driver writes each block as an atomic part file, so a restarted
run resumes, and merges the parts in line order at the end. See docs/ray.md."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rocmre.data.record import DataFormatError
from rocmre.inference.batch import count_lines, dump_row, error_row, is_parquet, iter_input, parse_line, predict_rows

if TYPE_CHECKING:
    from rocmre.inference.extractor import RelationExtractor

INSTALL_HINT = "Ray is not installed: pip install 'rocmre[ray]'"
PART = re.compile(r"part-(\d+)-(\d+)\.jsonl")
ROW_LINE = re.compile(r'\{"line": (\d+)')
ERROR_ROW = re.compile(r'\{"line": \d+, "error": ')
MANIFEST = "manifest.json"


@dataclass
class RayOptions:
    """Where and how wide a Ray run is (see docs/ray.md): cluster ``address``, ``workers`` actors with ``num_cpus``
    and ``num_gpus`` each, ``no_progress_timeout_s`` before a stalled run fails, ``rows_per_block`` (the retry and
    resume unit)."""

    address: str | None = None
    workers: int = 2
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    no_progress_timeout_s: float = 600.0
    rows_per_block: int | None = None


def parts_dir(output: Path) -> Path:
    """The folder of a run's part files, next to its output: ``OUT.parts``."""
    return output.with_name(output.name + ".parts")


def predict_ray(model: str | Path | RelationExtractor, input_path: str | Path, output: str | Path, *,
                options: RayOptions | None = None, top_k: int = 3, batch_size: int = 32,
                missing_image: str = "error", load_kwargs: dict[str, Any] | None = None, show_progress: bool = True,
                on_error: Callable[[DataFormatError], None] | None = None) -> tuple[int, int]:
    """Predict every line of ``input_path`` into ``output`` (the rows of ``predict_file``, in line order) on a Ray
    cluster; returns (predicted, skipped). ``model`` is a folder every worker can read or a configured extractor; a
    killed run resumes when started again with the same input. ``on_error`` is told each skipped line."""
    options = options or RayOptions()
    input_path, output = Path(input_path).absolute(), Path(output).absolute()
    if missing_image not in ("error", "ignore"):
        raise ValueError(f"missing_image must be 'error' or 'ignore', not {missing_image!r}")
    if options.workers < 1 or options.num_cpus < 0 or options.num_gpus < 0:
        raise ValueError("workers must be >= 1 and num_cpus, num_gpus >= 0")
    if isinstance(model, str | Path) and not (Path(model) / "config.json").is_file():
        raise ValueError(f"{model} is not a model folder (no config.json)")
    work = parts_dir(output)
    stat = input_path.stat()
    _check_manifest(work, {"input": str(input_path), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
                           "model": str(Path(model).absolute()) if isinstance(model, str | Path) else "extractor",
                           "top_k": top_k, "missing_image": missing_image})
    done = done_lines(work)
    model_dir, kwargs = _model_source(model, work, load_kwargs, options)
    total = count_lines(input_path)
    if len(done) < total:
        _run(model_dir, kwargs, input_path, work, done, total, options=options, top_k=top_k, batch_size=batch_size,
             missing_image=missing_image, show_progress=show_progress, on_error=on_error)
    counts = merge_parts(work, output)
    shutil.rmtree(work, ignore_errors=True)
    return counts


def _check_manifest(work: Path, manifest: dict[str, Any]) -> None:
    """Record what a run predicts; a folder left by a run on another input or with other options is refused."""
    path = work / MANIFEST
    if path.is_file():
        before = json.loads(path.read_text(encoding="utf-8"))
        if before != manifest:
            changed = sorted(k for k in manifest if before.get(k) != manifest[k])
            raise ValueError(f"{work} holds part of a run with another {', '.join(changed)}: delete the folder to "
                             "start over, or run with the same input and options to resume it")
        return
    work.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(manifest, indent=1))


def _model_source(model: str | Path | RelationExtractor, work: Path, load_kwargs: dict[str, Any] | None,
                  options: RayOptions) -> tuple[str, dict[str, Any]]:
    """(the folder the workers load, their ``from_pretrained`` keywords)."""
    kwargs = dict(load_kwargs or {})
    if not isinstance(model, str | Path):  # an extractor configured on the driver: saved for the workers
        folder = work / "model"
        shutil.rmtree(folder, ignore_errors=True)
        model.save_pretrained(folder)
        kwargs = {"precision": model.runtime.precision, "cache_dir": str(model.runtime.cache_dir)} | kwargs
        model = folder
    if options.num_gpus > 0:
        kwargs.setdefault("device", "cuda")
    return str(Path(model).absolute()), kwargs


def done_lines(work: Path) -> set[int]:
    """The lines already written to the part files of ``work`` (a part is whole or absent: written by rename)."""
    done: set[int] = set()
    if not work.is_dir():
        return done
    for part in work.iterdir():
        if part.name.startswith(".") and part.name.endswith(".tmp"):
            part.unlink(missing_ok=True)  # a part whose writer was killed
        elif PART.fullmatch(part.name):
            with open(part, encoding="utf-8") as f:
                done.update(int(ROW_LINE.match(row).group(1)) for row in f)  # type: ignore[union-attr]
    return done


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_part(work: Path, lines: list[int], rows: list[str]) -> None:
    """One block's rows (JSON lines, in line order) as a part file, whole or not at all."""
    _write_atomic(work / f"part-{lines[0]:012d}-{lines[-1]:012d}.jsonl", "".join(r + "\n" for r in rows))


def input_blocks(input_path: Path, done: set[int], rows_per_block: int) -> Iterator[dict[str, list]]:
    """The lines not in ``done`` as column blocks: ``line``, ``pair`` (the line's JSON object, its image made
    absolute against the input's folder) or, for a line that is not an object, ``error`` and ``field``."""
    base = input_path.parent
    block: dict[str, list] = {"line": [], "pair": [], "error": [], "field": []}
    for lineno, obj in iter_input(input_path):
        if lineno in done:
            continue
        if isinstance(obj, DataFormatError):
            pair, error, field = None, obj.reason, obj.field
        else:
            image = obj.get("image")
            if isinstance(image, str) and image.strip() and not Path(image).is_absolute():
                obj = obj | {"image": str(base / image)}
            pair, error, field = json.dumps(obj), None, None
        for key, value in (("line", lineno), ("pair", pair), ("error", error), ("field", field)):
            block[key].append(value)
        if len(block["line"]) >= rows_per_block:
            yield block
            block = {key: [] for key in block}
    if block["line"]:
        yield block


class RowPredictor:
    """A Ray Data worker: one extractor, and the output rows (JSON lines) of each batch of input lines."""

    def __init__(self, model_dir: str, load_kwargs: dict[str, Any], *, input_name: str, top_k: int,
                 batch_size: int, missing_image: str, threads: int) -> None:
        import torch

        from rocmre.inference.extractor import RelationExtractor

        torch.set_num_threads(threads)
        self.extractor = RelationExtractor.from_pretrained(model_dir, **load_kwargs)
        self.input_name, self.top_k, self.batch_size = input_name, top_k, batch_size
        self.missing_image = missing_image

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        lines = [int(n) for n in batch["line"]]
        parsed = []
        for lineno, pair, error, field in zip(lines, batch["pair"], batch["error"], batch["field"], strict=True):
            if pair is None:
                parsed.append((lineno, DataFormatError(error, self.input_name, lineno, field)))
            else:
                parsed.append((lineno, parse_line(lineno, json.loads(pair), self.input_name, None, self.missing_image)))
        try:
            rows = predict_rows(self.extractor, parsed, top_k=self.top_k, batch_size=self.batch_size)
        except Exception as e:  # noqa: BLE001 - never lose a block: every line still gets its row
            rows = [error_row(n, f"prediction failed ({type(e).__name__}: {e})") for n in lines]
        return {"line": lines, "row": [_dump(r) for r in rows]}


def _dump(row: dict[str, Any]) -> str:
    try:
        return dump_row(row).encode("utf-8").decode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (from a JSON escape) cannot go into Arrow's UTF-8 as is
        return json.dumps(row)


@contextlib.contextmanager
def ray_session(address: str | None) -> Iterator[None]:
    """``ray.init(address)`` unless Ray is already initialised in this process; shut down only what it started."""
    try:
        import ray
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    if ray.is_initialized():
        yield
        return
    ray.init(address=address, include_dashboard=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _data_context(options: RayOptions) -> Iterator[None]:
    """Ray Data settings for a run (restored after it): blocks come back in input order, a stalled pipeline fails
    after ``no_progress_timeout_s``, no Ray progress bars (the driver shows its own)."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    timeout = "execution_no_progress_timeout_s"  # recent Ray Data; a harmless attribute on versions without it
    before = (ctx.execution_options.preserve_order, getattr(ctx, timeout, None), ctx.enable_progress_bars)
    ctx.execution_options.preserve_order = True
    setattr(ctx, timeout, options.no_progress_timeout_s)
    ctx.enable_progress_bars = False
    try:
        yield
    finally:
        ctx.execution_options.preserve_order, ctx.enable_progress_bars = before[0], before[2]
        setattr(ctx, timeout, before[1])


def _run(model_dir: str, load_kwargs: dict[str, Any], input_path: Path, work: Path, done: set[int], total: int, *,
         options: RayOptions, top_k: int, batch_size: int, missing_image: str, show_progress: bool,
         on_error: Callable[[DataFormatError], None] | None) -> None:
    """Predict the lines not in ``done`` on the cluster, writing a part file per block as it comes back."""
    from tqdm.auto import tqdm

    with ray_session(options.address), _data_context(options):
        import pyarrow as pa
        import ray
        from ray.data import ActorPoolStrategy

        rows_per_block = options.rows_per_block or 4 * batch_size
        schema = pa.schema([("line", pa.int64()), ("pair", pa.string()), ("error", pa.string()),
                            ("field", pa.string())])
        tables = [pa.table(b, schema=schema) for b in input_blocks(input_path, done, rows_per_block)]
        ds = ray.data.from_arrow(tables).map_batches(
            RowPredictor, batch_size=batch_size, batch_format="numpy",
            compute=ActorPoolStrategy(size=options.workers), num_cpus=options.num_cpus,
            num_gpus=options.num_gpus or None,
            fn_constructor_args=(model_dir, load_kwargs),
            fn_constructor_kwargs={"input_name": str(input_path), "top_k": top_k, "batch_size": batch_size,
                                   "missing_image": missing_image,
                                   "threads": max(1, round(options.num_cpus))})
        with tqdm(total=total, initial=len(done), desc="predicting (ray)", unit="line",
                  disable=not show_progress) as bar:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                lines, rows = [int(n) for n in out["line"]], [str(r) for r in out["row"]]
                if not lines:
                    continue
                write_part(work, lines, rows)
                if on_error is not None:
                    _report_errors(lines, rows, input_path, on_error)
                bar.update(len(lines))


def _report_errors(lines: list[int], rows: list[str], input_path: Path,
                   on_error: Callable[[DataFormatError], None]) -> None:
    for lineno, row in zip(lines, rows, strict=True):
        if ERROR_ROW.match(row):
            data = json.loads(row)
            on_error(DataFormatError(data["error"], input_path, lineno, data.get("field")))


def merge_parts(work: Path, output: Path) -> tuple[int, int]:
    """Write the rows of ``work``'s part files into ``output`` in line order (JSONL, or Parquet by its name),
    replacing it whole; returns (predicted, skipped)."""
    parts = sorted((int(m.group(1)), int(m.group(2)), p) for p in work.iterdir() if (m := PART.fullmatch(p.name)))
    if any(a[1] >= b[0] for a, b in zip(parts, parts[1:], strict=False)):  # not runs of lines one after another
        rows = sorted((int(ROW_LINE.match(r).group(1)), r) for *_, p in parts  # type: ignore[union-attr]
                      for r in p.read_text(encoding="utf-8").splitlines())
        ordered: Iterator[str] = (r for _, r in rows)
    else:
        ordered = (r.rstrip("\n") for *_, p in parts for r in open(p, encoding="utf-8"))  # noqa: SIM115
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    counts = [0, 0]
    if is_parquet(output):
        _write_parquet(_counted(ordered, counts), tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in _counted(ordered, counts):
                f.write(row + "\n")
    os.replace(tmp, output)
    return counts[0], counts[1]


def _counted(rows: Iterator[str], counts: list[int]) -> Iterator[str]:
    for row in rows:
        counts[1 if ERROR_ROW.match(row) else 0] += 1
        yield row


def _parquet_schema() -> Any:
    import pyarrow as pa

    candidate = pa.struct([("relation", pa.string()), ("score", pa.float64()), ("description", pa.string())])
    entity = pa.struct([("name", pa.string()), ("type", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
                        ("box", pa.list_(pa.float64()))])
    return pa.schema([("line", pa.int64()), ("id", pa.string()), ("error", pa.string()), ("field", pa.string()),
                      ("relation", pa.string()), ("score", pa.float64()), ("description", pa.string()),
                      ("top_k", pa.list_(candidate)), ("head", entity), ("tail", entity), ("has_image", pa.bool_())])


def _write_parquet(rows: Iterator[str], path: Path, chunk: int = 10_000) -> None:
    """The rows as Parquet columns (a field a row lacks is null; an ``id`` that is not a string is its JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    with pq.ParquetWriter(path, schema) as writer:
        buffer: list[dict[str, Any]] = []
        written = False
        for row in rows:
            data = json.loads(row)
            if "id" in data and not isinstance(data["id"], str):
                data["id"] = json.dumps(data["id"])
            buffer.append(data)
            if len(buffer) >= chunk:
                writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
                buffer, written = [], True
        if buffer or not written:
            writer.write_table(pa.Table.from_pylist(buffer, schema=schema))
