"""``rocmre predict``: relations for every entity pair of a JSONL file, streamed, one output line per input line."""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rocmre.cli.common import (
    fail,
    precision_option,
    type_prior_option,
    type_prior_scope_option,
)
from rocmre.data.record import DataFormatError

if TYPE_CHECKING:
    from rocmre.inference.extractor import PairInput, RelationExtractor


def count_lines(path: Path) -> int:
    """Lines of a file (the progress bar's total: every line gets an output line)."""
    with open(path, encoding="utf-8-sig") as f:
        return sum(1 for _ in f)


def predict_file(extractor: RelationExtractor, input_path: Path, output, *, top_k: int = 3, batch_size: int = 32,
                 skip_bad_lines: bool = True, missing_image: str = "error", show_progress: bool = True,
                 on_error=None) -> tuple[int, int]:
    """Predict every line of ``input_path`` into the open text file ``output``; returns (predicted, skipped).

    Output line ``i`` answers input line ``i``: the prediction dict plus ``line`` (and the input's ``id``), or
    ``{"line": n, "error": "...", "field": "..."}`` for a skipped bad line; a blank line is always skipped, as
    ``{"line": n, "error": "blank line"}``. Lines are parsed by :func:`rocmre.data.inputs.pair_from_json` (images
    relative to the input's folder). With ``skip_bad_lines=False`` the first bad line raises
    :class:`DataFormatError`.
    """
    from tqdm.auto import tqdm

    from rocmre.data.inputs import pair_from_json
    from rocmre.data.jsonl import BlankLine, iter_jsonl

    if missing_image not in ("error", "ignore"):
        raise ValueError(f"missing_image must be 'error' or 'ignore', not {missing_image!r}")

    pending: deque[tuple[int, Any, str | None]] = deque()  # (line, id or error field, error) in input order
    counts = {"predicted": 0, "skipped": 0}
    bar = tqdm(total=count_lines(input_path), desc="predicting", unit="line", disable=not show_progress)

    def valid_pairs() -> Iterator[PairInput]:
        for lineno, obj in iter_jsonl(input_path, blank_lines=True):
            try:
                if isinstance(obj, DataFormatError):
                    raise obj
                pair = pair_from_json(obj, input_path, lineno, input_path.parent, missing_image)
            except DataFormatError as e:
                if not skip_bad_lines and not isinstance(e, BlankLine):
                    raise
                if on_error is not None:
                    on_error(e)
                pending.append((lineno, e.field, e.reason))
                continue
            pending.append((lineno, pair.extra.get("id"), None))
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


def load_relations_file(path: Path) -> dict[str, Any]:
    """The relations of a ``--relations`` file, for :meth:`RelationExtractor.add_relations`.

    A JSON object ``{name: [descriptions]}`` or ``{name: {"descriptions": [...], "examples": [...], "head_types":
    [...], "tail_types": [...]}}`` (examples as ``rocmre predict`` input lines; an example's ``image`` is relative
    to the file's folder), or a rocmre descriptions file (``"format": "rocmre-descriptions/1"``). Errors name the
    file (:class:`DataFormatError`).
    """
    from rocmre.descriptions.store import FORMAT, RelationDescriptions

    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON: {e.msg}", path, e.lineno, None) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataFormatError(f"cannot read it: {e}", path, None, None) from None
    if not isinstance(data, dict) or not data:
        raise DataFormatError('expected a non-empty JSON object {"relation name": ["description", ...]} or '
                              '{"relation name": {"descriptions": [...], "examples": [...]}}', path, None, None)
    if data.get("format") == FORMAT:
        store = RelationDescriptions.from_dict(data, str(path))
        return {name: {"descriptions": e.texts, "examples": e.examples, "head_types": e.head_types,
                       "tail_types": e.tail_types} | e.numbers()
                for name, e in store.relations.items() if name != store.negative_label}
    out: dict[str, Any] = {}
    for name, spec in data.items():
        if isinstance(spec, dict) and isinstance(spec.get("examples"), list):
            examples = []
            for i, ex in enumerate(spec["examples"]):
                image = ex.get("image") if isinstance(ex, dict) else None
                if isinstance(image, str) and image.strip() and not Path(image).is_absolute():
                    ex = ex | {"image": str(path.parent / image)}
                examples.append(ex)
                if isinstance(image, str) and image.strip() and not Path(ex["image"]).is_file():
                    raise DataFormatError(f"image not found: {ex['image']}", path, None,
                                          f"{name}.examples[{i}].image")
            spec = spec | {"examples": examples}
        out[name] = spec
    return out


def relations_option(path: Path) -> dict[str, Any]:
    """The relations of a ``--relations`` file (:func:`load_relations_file`), or a one-line error naming it."""
    try:
        return load_relations_file(path)
    except DataFormatError as e:  # names the file
        fail(str(e))


def add_relations_option(extractor: RelationExtractor, relations: dict[str, Any], path: Path) -> list[str]:
    """Add the relations read from ``--relations`` ``path`` to ``extractor``'s model (the names added), or a
    one-line error naming the file."""
    try:
        return extractor.add_relations(relations)
    except (ValueError, TypeError) as e:
        fail(f"{path}: {e}")


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
            relations: Path | None = typer.Option(None, "--relations", exists=True, dir_okay=False,
                                                  help="Relations to add before predicting (ROC): a JSON object "
                                                       "{name: [descriptions]} or {name: {descriptions, examples, "
                                                       "head_types, tail_types}}; descriptions may use {head} and "
                                                       "{tail}."),
            tune_offset_on: Path | None = typer.Option(
                None, "--tune-offset-on", exists=True, dir_okay=False,
                help="Labelled pairs (JSONL with 'relation') of the model's trained relations: choose one score "
                     "offset for the --relations relations so that the trained relations lose at most "
                     "--max-seen-drop F1 points on them (RelationExtractor.tune_score_offset)."),
            tune_kind: str = typer.Option("score_offset", "--tune-kind",
                                          help="With --tune-offset-on: 'score_offset' (added to their scores) or "
                                               "'none_margin' (the extra margin over None they must clear)."),
            max_seen_drop: float = typer.Option(1.0, "--max-seen-drop", min=0.0,
                                                help="With --tune-offset-on: the F1 points the trained relations "
                                                     "may lose."),
            missing_image: str = typer.Option("error", "--missing-image",
                                              help="A listed image that does not exist: 'error' (a bad line) "
                                                   "or 'ignore' (predict from the text)."),
            cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder."),
            device: str = typer.Option("cpu", "--device"),
            type_prior: bool | None = type_prior_option(),
            type_prior_scope: str | None = type_prior_scope_option(),
            precision: str | None = precision_option(),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar.")) -> None:
    """Predict the relation of every pair in a JSONL file: one output line per input line, in order."""
    from rocmre.inference.extractor import RelationExtractor

    if missing_image not in ("error", "ignore"):
        fail(f"--missing-image must be 'error' or 'ignore', not {missing_image!r}")
    new_relations = None
    if tune_offset_on is not None and relations is None:
        fail("--tune-offset-on tunes the offset of the relations of --relations: give --relations too")
    from rocmre.descriptions.store import RELATION_NUMBERS

    if tune_kind not in RELATION_NUMBERS:
        fail(f"--tune-kind must be one of {', '.join(RELATION_NUMBERS)}, not {tune_kind!r}")
    if relations is not None:
        new_relations = relations_option(relations)
    try:
        extractor = RelationExtractor.from_pretrained(model, descriptions, device=device, cache_dir=cache_dir,
                                                      precision=precision, type_prior=type_prior,
                                                      type_prior_scope=type_prior_scope)
    except (OSError, ValueError, TypeError, KeyError) as e:
        fail(f"cannot load the model {model}: {e}")
    if new_relations is not None:
        add_relations_option(extractor, new_relations, relations)
    if tune_offset_on is not None:
        from rocmre.data.jsonl import read_jsonl

        try:
            labelled = read_jsonl(tune_offset_on, negative_label=extractor.model.config.negative_label,
                                  missing_image="mark")  # a pair whose image is missing is scored from its text
        except DataFormatError as e:
            fail(str(e))
        unlabelled = [i for i, r in enumerate(labelled.records) if r.relation is None]
        if unlabelled:
            fail(f"{tune_offset_on}: record {unlabelled[0] + 1} has no 'relation': --tune-offset-on needs "
                 "labelled pairs")
        offset, drop = extractor.tune_score_offset(labelled.records, list(new_relations or {}), max_seen_drop,
                                                   kind=tune_kind, show_progress=not quiet)
        with_image = sum(r.image_path is not None and Path(r.image_path).is_file() for r in labelled.records)
        typer.echo(f"{tune_kind.replace('_', ' ')} of the added relations: {offset:+.2f} (the others lose {drop:.2f} "
                   "F1 points on "
                   f"{len(labelled.records)} labelled pairs, {with_image} with their image)", err=True)

    def report(e: DataFormatError) -> None:
        from tqdm.auto import tqdm

        message = f"skipped {e}"
        tqdm.write(typer.style(message, fg=typer.colors.YELLOW) if sys.stderr.isatty() else message, file=sys.stderr)

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
