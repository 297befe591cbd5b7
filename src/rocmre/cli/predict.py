"""``rocmre predict``: relations for every entity pair of a JSONL file, streamed, one output line per input line."""

from __future__ import annotations

import json
import re
import sys
from collections import deque
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rocmre.cli.common import fail
from rocmre.data.record import DataFormatError

if TYPE_CHECKING:
    from rocmre.inference.extractor import PairInput, RelationExtractor

_WORD = re.compile(r"\S+")


def _uses_token_offsets(spec: Any) -> bool:
    return isinstance(spec, Mapping) and "start" in spec and "box" not in spec


def _char_to_token_span(spec: Mapping[str, Any], text: str, path: Path, line: int, key: str) -> dict[str, Any]:
    """A ``char_start``/``char_end`` entity re-expressed as whitespace-token offsets (when the other entity uses
    token offsets, the text is split on whitespace as the JSONL format says)."""
    spans = [m.span() for m in _WORD.finditer(text)]
    start, end = spec["char_start"], spec["char_end"]
    starts = [i for i, (s, _) in enumerate(spans) if s == start]
    ends = [i for i, (_, e) in enumerate(spans) if e == end]
    if not starts or not ends or ends[0] < starts[0]:
        raise DataFormatError(f"character span [{start}, {end}) does not fall on whitespace-token boundaries",
                              path, line, key)
    out = {k: v for k, v in spec.items() if k not in ("char_start", "char_end")}
    out.update(start=starts[0], end=ends[0] + 1)
    return out


def _check_entity(spec: Any, path: Path, line: int, key: str) -> None:
    if isinstance(spec, str):
        if not spec.strip():
            raise DataFormatError("empty entity string", path, line, key)
        return
    if not isinstance(spec, Mapping):
        raise DataFormatError("must be an entity string or an object with 'name' and offsets (or a 'box')",
                              path, line, key)
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise DataFormatError("must be a string", path, line, f"{key}.name")
    etype = spec.get("type")
    if etype is not None:
        from rocmre.data.entity_types import ENTITY_TYPES

        if etype not in ENTITY_TYPES:
            raise DataFormatError(f"{etype!r} is not one of {list(ENTITY_TYPES)}", path, line, f"{key}.type")
    if "box" in spec:
        from rocmre.data.more import parse_box

        if key == "head":
            raise DataFormatError("the head must be a text span", path, line, key)
        parse_box(spec["box"], path, line, f"{key}.box")
        return
    for a, b in (("start", "end"), ("char_start", "char_end")):
        if a in spec or b in spec:
            values = (spec.get(a), spec.get(b))
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise DataFormatError(f"needs integer '{a}' and '{b}'", path, line, key)
            return
    if not isinstance(name, str) or not name.strip():
        raise DataFormatError("give 'name' (to locate), 'start'/'end', 'char_start'/'char_end' or 'box'",
                              path, line, key)


def jsonl_to_pair(obj: Mapping[str, Any], path: Path, line: int, missing_image: str = "error") -> PairInput:
    """A :class:`PairInput` from one JSONL object; raises :class:`DataFormatError` naming the line and field.

    ``tokens`` or ``text``; ``head``/``tail`` as an entity string (located), ``{"name", "start", "end"}``
    (token offsets; a ``text`` is then split on whitespace), ``{"char_start", "char_end"}`` or, for the tail,
    ``{"name", "box"}``; ``image`` relative to the file's folder; optional ``head_type``/``tail_type``.
    """
    from rocmre.inference.extractor import PairInput

    if "tokens" in obj:
        tokens = obj["tokens"]
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise DataFormatError("must be a non-empty list of strings", path, line, "tokens")
        text: str | list[str] = tokens
    elif isinstance(obj.get("text"), str) and obj["text"].strip():
        text = obj["text"]
    else:
        raise DataFormatError("missing: give 'tokens' or 'text'", path, line, "text")
    entities = {}
    for key in ("head", "tail"):
        if key not in obj:
            raise DataFormatError("missing", path, line, key)
        _check_entity(obj[key], path, line, key)
        entities[key] = obj[key]
    if isinstance(text, str) and any(_uses_token_offsets(e) for e in entities.values()):
        for key, spec in entities.items():
            if isinstance(spec, Mapping) and "char_start" in spec:
                entities[key] = _char_to_token_span(spec, text, path, line, key)
        text = text.split()
    types: dict[str, str | None] = {}
    for key in ("head_type", "tail_type"):
        value = obj.get(key)
        if value is not None:
            from rocmre.data.entity_types import ENTITY_TYPES

            if value not in ENTITY_TYPES:
                raise DataFormatError(f"{value!r} is not one of {list(ENTITY_TYPES)}", path, line, key)
        types[key] = value
    image = obj.get("image")
    image_path = None
    if image is not None:
        if not isinstance(image, str):
            raise DataFormatError("must be a path string", path, line, "image")
        candidate = Path(image) if Path(image).is_absolute() else path.parent / image
        if candidate.is_file():
            image_path = candidate
        elif missing_image == "error":
            raise DataFormatError(f"image not found: {candidate}", path, line, "image")
    return PairInput(text, entities["head"], entities["tail"], image_path, types["head_type"], types["tail_type"])


def resolve_pair(extractor: RelationExtractor, pair: PairInput, path: Path, line: int) -> None:
    """Locate both entities now, so that a bad line is reported with its field instead of failing a batch."""
    from rocmre.inference.extractor import resolve_entity, tokenize

    if isinstance(pair.text, str):
        tokens, offsets = tokenize(pair.text)
        char_text: str | None = pair.text
    else:
        tokens, offsets, char_text = list(pair.text), None, None
    if not tokens:
        raise DataFormatError("the text has no tokens", path, line, "text")
    for key, spec, etype in (("head", pair.head, pair.head_type), ("tail", pair.tail, pair.tail_type)):
        try:
            resolve_entity(spec, tokens, offsets, char_text, key, etype)
        except (ValueError, TypeError) as e:
            raise DataFormatError(str(e), path, line, key) from None


def count_lines(path: Path) -> int:
    """Non-blank lines of a file (the progress bar's total)."""
    with open(path, encoding="utf-8") as f:
        return sum(1 for raw in f if raw.strip())


def predict_file(extractor: RelationExtractor, input_path: Path, output, *, top_k: int = 3, batch_size: int = 32,
                 skip_bad_lines: bool = True, missing_image: str = "error", show_progress: bool = True,
                 on_error=None) -> tuple[int, int]:
    """Predict every line of ``input_path`` into the open text file ``output``; returns (predicted, skipped).

    Output line ``i`` answers input line ``i`` (blank lines excepted): the prediction dict plus ``line``
    (and the input's ``id``), or ``{"line": n, "error": "...", "field": "..."}`` for a skipped bad line. With
    ``skip_bad_lines=False`` the first bad line raises :class:`DataFormatError`.
    """
    from tqdm.auto import tqdm

    from rocmre.data.jsonl import iter_jsonl

    pending: deque[tuple[int, Any, str | None]] = deque()  # (line, id or error field, error) in input order
    counts = {"predicted": 0, "skipped": 0}
    bar = tqdm(total=count_lines(input_path), desc="predicting", unit="line", disable=not show_progress)

    def valid_pairs() -> Iterator[PairInput]:
        for lineno, obj in iter_jsonl(input_path):
            try:
                if isinstance(obj, DataFormatError):
                    raise obj
                pair = jsonl_to_pair(obj, input_path, lineno, missing_image)
                resolve_pair(extractor, pair, input_path, lineno)
            except DataFormatError as e:
                if not skip_bad_lines:
                    raise
                if on_error is not None:
                    on_error(e)
                pending.append((lineno, e.field, e.reason))
                continue
            pending.append((lineno, obj.get("id"), None))
            yield pair

    def flush_errors() -> None:
        while pending and pending[0][2] is not None:
            lineno, error_field, error = pending.popleft()
            row = {"line": lineno, "error": error} | ({"field": error_field} if error_field else {})
            output.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts["skipped"] += 1
            bar.update(1)

    try:
        for pred in extractor.predict_batch(valid_pairs(), batch_size=batch_size, top_k=top_k):
            flush_errors()
            lineno, item_id, _ = pending.popleft()
            row: dict[str, Any] = {"line": lineno}
            if item_id is not None:
                row["id"] = item_id
            row.update(pred.to_dict())
            output.write(json.dumps(row, ensure_ascii=False) + "\n")
            counts["predicted"] += 1
            bar.update(1)
        flush_errors()
    finally:
        bar.close()
    return counts["predicted"], counts["skipped"]


def predict(model: Path = typer.Option(..., "--model", "-m", exists=True, file_okay=False, help="Model folder."),
            input_path: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False,
                                            help="Entity pairs, one JSON object a line (see rocmre.data.jsonl)."),
            output: Path = typer.Option(..., "--output", "-o", dir_okay=False, help="Predictions (JSONL)."),
            top_k: int = typer.Option(3, "--top-k", min=1, help="Alternatives to list per pair."),
            batch_size: int = typer.Option(32, "--batch-size", min=1),
            skip_bad_lines: bool = typer.Option(True, "--skip-bad-lines/--fail-on-bad-line",
                                                help="Skip (and count) a bad line, or stop at it."),
            descriptions: Path | None = typer.Option(None, "--descriptions", exists=True, dir_okay=False,
                                                     help="Relation descriptions replacing the model's set."),
            missing_image: str = typer.Option("error", "--missing-image",
                                              help="A listed image that does not exist: 'error' (a bad line) "
                                                   "or 'ignore' (predict from the text)."),
            cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder."),
            device: str = typer.Option("cpu", "--device"),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Predict the relation of every pair in a JSONL file: one output line per input line, in order."""
    from rocmre.inference.extractor import RelationExtractor

    if missing_image not in ("error", "ignore"):
        fail(f"--missing-image must be 'error' or 'ignore', not {missing_image!r}")
    try:
        extractor = RelationExtractor.from_pretrained(model, descriptions, device=device, cache_dir=cache_dir)
    except (OSError, ValueError, TypeError, KeyError) as e:
        fail(f"cannot load the model {model}: {e}")

    def report(e: DataFormatError) -> None:
        from tqdm.auto import tqdm

        tqdm.write(typer.style(f"skipped {e}", fg=typer.colors.YELLOW), file=sys.stderr)

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(output, "w", encoding="utf-8") as out:
            n_pred, n_skip = predict_file(extractor, input_path, out, top_k=top_k, batch_size=batch_size,
                                          skip_bad_lines=skip_bad_lines, missing_image=missing_image,
                                          show_progress=not quiet, on_error=report)
    except DataFormatError as e:
        fail(f"{e} (use --skip-bad-lines to skip it)")
    typer.echo(f"{n_pred} predicted, {n_skip} skipped -> {output}", err=True)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
