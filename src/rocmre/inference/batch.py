"""Predicting a file of pairs line by line, for the local and the Ray ``rocmre predict``: one row per line,
``{"line", "id", <Prediction.to_dict()>}`` or ``{"line", "error", "field"}``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from rocmre.data.inputs import PairInput
from rocmre.data.record import DataFormatError

if TYPE_CHECKING:
    from rocmre.inference.extractor import Prediction, RelationExtractor

#: one input line: its number and its pair, or the error that stops it being predicted
ParsedLine = tuple[int, PairInput | DataFormatError]


def is_parquet(path: str | Path) -> bool:
    """Whether a file is read and written as Parquet (by its name) rather than JSONL."""
    return Path(path).suffix.lower() in (".parquet", ".pq")


def count_lines(path: Path) -> int:
    """Lines of a file, or rows of a Parquet file (the progress bar's total: every line gets an output line)."""
    if is_parquet(path):
        return _parquet_file(path).metadata.num_rows
    with open(path, encoding="utf-8-sig") as f:
        return sum(1 for _ in f)


def _parquet_file(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataFormatError("reading Parquet needs pyarrow (pip install 'rocmre[ray]')", path) from None
    try:
        return pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow's errors have no common base
        raise DataFormatError(f"not a readable Parquet file ({e})", path) from None


def iter_input(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object or the :class:`DataFormatError` reading it gave) for every line of a JSONL file (blank
    lines included), or every row of a Parquet file (numbered from 1; null columns left out)."""
    from rocmre.data.jsonl import iter_jsonl

    if not is_parquet(path):
        yield from iter_jsonl(path, blank_lines=True)
        return
    line = 0
    for batch in _parquet_file(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            line += 1
            yield line, {k: v for k, v in row.items() if v is not None}


def error_row(line: int, error: str, field: str | None = None) -> dict[str, Any]:
    """The output row of a line that was not predicted."""
    return {"line": line, "error": error} | ({"field": field} if field else {})


def prediction_row(line: int, item_id: Any, prediction: Prediction) -> dict[str, Any]:
    """The output row of a predicted line: its number, the input's ``id`` (when given) and the prediction."""
    row: dict[str, Any] = {"line": line}
    if item_id is not None:
        row["id"] = item_id
    row.update(prediction.to_dict())
    return row


def dump_row(row: dict[str, Any]) -> str:
    """A row as the one JSON line written for it (no newline)."""
    return json.dumps(row, ensure_ascii=False)


def parse_line(line: int, obj: Any, path: str | Path, base_dir: Path | None,
               missing_image: str = "error") -> PairInput | DataFormatError:
    """The pair of one parsed JSONL line (``obj``: the object, or the :class:`DataFormatError` reading it gave), or
    the error naming file, line and field. Images are relative to ``base_dir`` (None: as written)."""
    from rocmre.data.inputs import pair_from_json

    if isinstance(obj, DataFormatError):
        return obj
    try:
        return pair_from_json(obj, path, line, base_dir, missing_image)
    except DataFormatError as e:
        return e


def iter_parsed_lines(input_path: Path, missing_image: str = "error") -> Iterator[ParsedLine]:
    """Every line of a JSONL (or Parquet) file with its pair or error, images relative to the file's folder."""
    for lineno, obj in iter_input(input_path):
        yield lineno, parse_line(lineno, obj, input_path, input_path.parent, missing_image)


def predict_rows(extractor: RelationExtractor, lines: Sequence[ParsedLine], *, top_k: int = 3,
                 batch_size: int = 32) -> list[dict[str, Any]]:
    """One output row per line of ``lines``, in order. A batch the model raises on is predicted again pair by
    pair; a pair that still raises gets the error row ``prediction failed (<type>: <message>)``: a bad row never
    fails its neighbours."""
    pairs = [p for _, p in lines if isinstance(p, PairInput)]
    try:
        predictions: list[Prediction | DataFormatError] = list(
            extractor.predict_batch(pairs, batch_size=batch_size, top_k=top_k))
    except Exception:  # noqa: BLE001 - which pair failed is found below, one at a time
        predictions = [_predict_one(extractor, p, top_k) for p in pairs]
    found = iter(predictions)
    rows = []
    for lineno, parsed in lines:
        result = next(found) if isinstance(parsed, PairInput) else parsed
        if isinstance(result, DataFormatError):
            rows.append(error_row(lineno, result.reason, result.field))
        else:
            rows.append(prediction_row(lineno, parsed.extra.get("id"), result))  # type: ignore[union-attr]
    return rows


def _predict_one(extractor: RelationExtractor, pair: PairInput, top_k: int) -> Prediction | DataFormatError:
    try:
        return next(extractor.predict_batch([pair], batch_size=1, top_k=top_k))
    except Exception as e:  # noqa: BLE001 - any failure of one pair becomes its error row
        return DataFormatError(f"prediction failed ({type(e).__name__}: {e})")


def _chunks(lines: Iterable[ParsedLine], pairs_per_chunk: int, skip_bad_lines: bool,
            on_error: Callable[[DataFormatError], None] | None) -> Iterator[list[ParsedLine]]:
    """Runs of lines holding ``pairs_per_chunk`` pairs each (bad lines travel with them); a bad line is reported to
    ``on_error`` (or raised when ``skip_bad_lines`` is False; a blank line is always skipped)."""
    from rocmre.data.jsonl import BlankLine

    chunk: list[ParsedLine] = []
    n_pairs = 0
    for lineno, parsed in lines:
        if isinstance(parsed, DataFormatError):
            if not skip_bad_lines and not isinstance(parsed, BlankLine):
                raise parsed
            if on_error is not None:
                on_error(parsed)
        else:
            n_pairs += 1
        chunk.append((lineno, parsed))
        if n_pairs >= pairs_per_chunk:
            yield chunk
            chunk, n_pairs = [], 0
    if chunk:
        yield chunk


def predict_file(extractor: RelationExtractor, input_path: Path, output: IO[str], *, top_k: int = 3,
                 batch_size: int = 32, skip_bad_lines: bool = True, missing_image: str = "error",
                 show_progress: bool = True, on_error: Callable[[DataFormatError], None] | None = None
                 ) -> tuple[int, int]:
    """Predict every line of ``input_path`` into the open text file ``output``; returns (predicted, skipped).
    Output line ``i`` answers input line ``i`` (a blank line gives ``{"line": n, "error": "blank line"}``). With
    ``skip_bad_lines=False`` the first bad line, or a pair the model raises on, raises :class:`DataFormatError`."""
    from tqdm.auto import tqdm

    if missing_image not in ("error", "ignore"):
        raise ValueError(f"missing_image must be 'error' or 'ignore', not {missing_image!r}")
    counts = {"predicted": 0, "skipped": 0}
    with tqdm(total=count_lines(input_path), desc="predicting", unit="line", disable=not show_progress) as bar:
        for chunk in _chunks(iter_parsed_lines(input_path, missing_image), batch_size, skip_bad_lines, on_error):
            for row, (_, parsed) in zip(predict_rows(extractor, chunk, top_k=top_k, batch_size=batch_size),
                                         chunk, strict=True):
                if "error" in row and isinstance(parsed, PairInput):  # the model raised on it
                    error = DataFormatError(row["error"], input_path, row["line"], row.get("field"))
                    if not skip_bad_lines:
                        raise error
                    if on_error is not None:
                        on_error(error)
                output.write(dump_row(row) + "\n")
                counts["skipped" if "error" in row else "predicted"] += 1
                bar.update(1)
    return counts["predicted"], counts["skipped"]
