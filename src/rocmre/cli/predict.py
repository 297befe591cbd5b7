"""``rocmre predict``: relations for every entity pair of a JSONL file, streamed, one output line per input line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from rocmre.cli.common import fail, precision_option, type_prior_option, type_prior_scope_option
from rocmre.data.record import DataFormatError

if TYPE_CHECKING:
    from rocmre.inference.extractor import RelationExtractor


def load_relations_file(path: Path) -> dict[str, Any]:
    """The relations of a ``--relations`` file (``{name: [descriptions]}``, ``{name: {...}}`` or a descriptions
    file; example images relative to its folder), for :meth:`RelationExtractor.add_relations`."""
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
                    raise DataFormatError(f"image not found: {ex['image']}", path, None, f"{name}.examples[{i}].image")
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


def ray_option() -> str | None:
    return typer.Option(None, "--ray", metavar="ADDRESS",
                        help="Predict on a Ray cluster (pip install 'rocmre[ray]'; docs/ray.md): 'local' starts one "
                             "here, 'auto' attaches to the running one, or HOST:PORT / ray://HOST:PORT. A killed run "
                             "resumes when started again.")


def workers_option() -> int:
    return typer.Option(2, "--workers", min=1, help="With --ray: worker actors, each holding one model.")


def num_cpus_option() -> float:
    return typer.Option(1.0, "--num-cpus", min=0.0, help="With --ray: CPUs each worker reserves (fractions allowed; "
                                                         "it runs max(1, round(N)) threads).")


def num_gpus_option() -> float:
    return typer.Option(0.0, "--num-gpus", min=0.0, help="With --ray: GPUs each worker reserves (> 0: the model "
                                                         "runs on cuda).")


def predict(model: Path = typer.Option(..., "--model", "-m", exists=True, file_okay=False, help="Model folder."),
            input_path: Path = typer.Option(..., "--input", "-i", exists=True, dir_okay=False,
                                            help="Entity pairs, one JSON object a line (see rocmre.data.jsonl), or a "
                                                 "Parquet file with those columns."),
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
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
            ray: str | None = ray_option(), workers: int = workers_option(),
            num_cpus: float = num_cpus_option(), num_gpus: float = num_gpus_option()) -> None:
    """Predict the relation of every pair in a JSONL file: one output line per input line, in order."""
    from rocmre.inference.extractor import RelationExtractor
    check_output_options(output, ray, skip_bad_lines)

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

    n_pred, n_skip = write_predictions(extractor, input_path, output, top_k=top_k, batch_size=batch_size,
                                       skip_bad_lines=skip_bad_lines, missing_image=missing_image, quiet=quiet,
                                       on_error=report, ray=ray, workers=workers, num_cpus=num_cpus,
                                       num_gpus=num_gpus)
    typer.echo(f"{n_pred} predicted, {n_skip} skipped -> {output}", err=True)


def check_output_options(output: Path, ray: str | None, skip_bad_lines: bool) -> None:
    """Fail early on options a local or a Ray run cannot honour."""
    from rocmre.inference.batch import is_parquet

    if ray is None:
        if is_parquet(output):
            fail(f"--output {output}: Parquet is written by --ray runs; write JSONL here")
        return
    if not skip_bad_lines:
        fail("--fail-on-bad-line stops at the first bad line: a --ray run skips bad lines (each gets its error row)")
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        fail("--ray needs Ray: pip install 'rocmre[ray]'")


def write_predictions(extractor: RelationExtractor, input_path: Path, output: Path, *, top_k: int, batch_size: int,
                      skip_bad_lines: bool, missing_image: str, quiet: bool, on_error, ray: str | None,
                      workers: int, num_cpus: float, num_gpus: float) -> tuple[int, int]:
    """Predict ``input_path`` into ``output`` here (:func:`rocmre.inference.batch.predict_file`) or on Ray
    (:func:`rocmre.inference.distributed.predict_ray`); (predicted, skipped), or a one-line error."""
    from rocmre.inference.batch import predict_file

    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ray is not None:
            from rocmre.inference.distributed import RayOptions, predict_ray

            options = RayOptions(address=ray, workers=workers, num_cpus=num_cpus, num_gpus=num_gpus)
            return predict_ray(extractor, input_path, output, options=options, top_k=top_k, batch_size=batch_size,
                               missing_image=missing_image, show_progress=not quiet, on_error=on_error)
        with open(output, "w", encoding="utf-8") as out:
            return predict_file(extractor, input_path, out, top_k=top_k, batch_size=batch_size,
                                skip_bad_lines=skip_bad_lines, missing_image=missing_image,
                                show_progress=not quiet, on_error=on_error)
    except DataFormatError as e:
        fail(f"{e} (use --skip-bad-lines to skip it)" if not skip_bad_lines else str(e))
    except ValueError as e:  # a parts folder left by a run on another input
        fail(str(e))


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
