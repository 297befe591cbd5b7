"""``rocmre train`` and ``rocmre evaluate``."""

from __future__ import annotations

from pathlib import Path

import typer

from rocmre.cli.common import data_dir_option, fail, use_data_dir, user_errors


def train(config: Path | None = typer.Option(None, "--config", "-c", exists=True, dir_okay=False,
                                             help="Run config (YAML)."),
          override: list[str] = typer.Option([], "--set", help="Override a config value: section.key=value."),
          output_dir: str | None = typer.Option(None, "--output-dir", "-o", help="Where to save the model."),
          resume: Path | None = typer.Option(None, "--resume", file_okay=False,
                                             help="Continue an interrupted run from the newest checkpoint in this "
                                                  "output folder (its run_config.yaml is used)."),
          data_dir: Path | None = data_dir_option(),
          quiet: bool = typer.Option(False, "--quiet", help="No progress bars.")) -> None:
    """Train a ROC or classification model as a run config says; the best checkpoint is chosen on val.

    Checkpoints go to OUTPUT_DIR/checkpoints/ (every evaluation, and every train.checkpoint_every steps); the
    model folder is written only when training ends. `--resume OUTPUT_DIR` continues an interrupted run exactly.
    """
    from rocmre.training.config import RunConfig
    from rocmre.training.trainer import CHECKPOINTS_DIR, RUN_CONFIG_NAME
    from rocmre.training.trainer import train as run_training

    use_data_dir(data_dir)
    if resume is not None:
        saved = resume / CHECKPOINTS_DIR / RUN_CONFIG_NAME
        if config is None and not saved.is_file():
            fail(f"{resume} has no {CHECKPOINTS_DIR}/{RUN_CONFIG_NAME}: it holds no run to resume", code=2)
        config = config or saved
        override = [*override, f"output_dir={resume}"]
    elif config is None:
        fail("give --config RUN.yaml (or --resume OUTPUT_DIR)", code=2)
    overrides = list(override) + ([f"output_dir={output_dir}"] if output_dir else [])
    with user_errors(f"invalid config {config}", code=2):
        cfg = RunConfig.from_yaml(config, overrides)
    with user_errors("cannot train"):
        summary = run_training(cfg, show_progress=not quiet, resume_from_checkpoint=True if resume else None)
    if not summary.is_main_process:
        return
    typer.echo(f"saved {summary.output_dir} (best val micro-F1 {100 * summary.best_val_f1:.2f} at epoch "
               f"{summary.best_epoch:.2f}; {summary.train_minutes:.1f} min, {summary.examples_per_second:.1f} ex/s)")


def evaluate(model: Path = typer.Option(..., "--model", "-m", exists=True, file_okay=False, help="Model folder."),
             split: str = typer.Option("test", "--split", help="train, val or test."),
             data: str | None = typer.Option(None, "--data", help="Dataset path (default: the model's run config)."),
             data_dir: Path | None = data_dir_option(),
             out: Path | None = typer.Option(None, "--out", help="Folder for the reports (default: the model's)."),
             batch_size: int = typer.Option(64, "--batch-size", min=1),
             relations: Path | None = typer.Option(
                 None, "--relations", exists=True, dir_okay=False,
                 help="Relations to add before scoring, the file of `rocmre predict --relations` (ROC models): "
                      "how well relations added without retraining are recognised, and what they cost the others."),
             quiet: bool = typer.Option(False, "--quiet")) -> None:
    """Score a model on a split: accuracy, micro P/R/F1, macro-F1, per relation, confusion matrix, Hits@k/MRR."""
    from rocmre.evaluation.report import evaluate_dataset, write_evaluation
    from rocmre.modeling.model import RelationModel
    from rocmre.training.config import RunConfig
    from rocmre.training.setup import load_run_data, make_runtime

    use_data_dir(data_dir)
    run_file = model / "run_config.yaml"
    with user_errors(f"invalid run config {run_file}", code=2):
        if run_file.is_file():
            cfg = RunConfig.from_yaml(run_file)
        else:
            cfg = RunConfig()
            if data is None:
                typer.secho(f"warning: {model} has no run_config.yaml: reading the default dataset "
                            f"{cfg.data.path!r} (pass --data to choose)", err=True, fg=typer.colors.YELLOW)
    if data is not None:
        cfg.data.path = data
    with user_errors(f"cannot read the {split} split"):
        dataset = load_run_data(cfg, split, keep_excluded=True)  # every record of the split
    from rocmre.cli.predict import add_relations_option, relations_option

    new_relations = relations_option(relations) if relations is not None else None
    with user_errors(f"cannot load the model {model}"):
        m = RelationModel.from_pretrained(model)
    title = f"{model.name} on {split}"
    if new_relations is not None:
        from rocmre.inference.extractor import RelationExtractor
        from rocmre.training.setup import run_cache_dir

        # the extractor adds them to the model it wraps (descriptions, examples' prototypes, type signatures)
        added = add_relations_option(RelationExtractor(m, run_cache_dir(cfg)), new_relations, relations)
        title += f", relations added from {relations.name}: {len(new_relations)} ({len(added)} new)"
    with user_errors(f"cannot evaluate on {split}"):
        runtime = make_runtime(m, cfg)
        ev = evaluate_dataset(runtime, dataset, batch_size, show_progress=not quiet)
        paths = write_evaluation(ev, out or model, title)
    r = ev.overall
    typer.echo(f"{split}: {len(ev.gold)} records ({ev.n_with_image} with image) accuracy {100 * r.accuracy:.2f} "
               f"P {100 * r.precision:.2f} R {100 * r.recall:.2f} micro-F1 {100 * r.f1:.2f} "
               f"macro-F1 {100 * r.macro_f1:.2f}" + (f" Hits@1 {100 * r.hits_at_1:.2f} MRR {100 * r.mrr:.2f}"
                                                    if r.hits_at_1 is not None else ""))
    typer.echo("wrote " + ", ".join(str(p) for p in paths.values()))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
