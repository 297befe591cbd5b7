"""``rocmre data stats`` and ``rocmre data download``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from rocmre.cli.common import CONTEXT_SETTINGS, data_dir_option, fail, use_data_dir, user_errors

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, context_settings=CONTEXT_SETTINGS,
                       help="Inspect and fetch datasets (MNRE, MORE, JSONL, relation corpora).")


@data_app.command("stats")
def stats(path: str | None = typer.Argument(None, help="Dataset folder or JSONL file; relative paths are also tried "
                                                 "under the data folder (default: the data folder itself)."),
          data_dir: Path | None = data_dir_option(),
          split: str = typer.Option("train,val,test", "--split", help="Comma-separated splits."),
          fmt: str = typer.Option("auto", "--format", help="auto, mnre, more, jsonl, or a relation corpus: fewrel, "
                                                   "wiki80, redocred, relations (all three)."),
          negative_label: str | None = typer.Option(None, "--negative-label",
                                                    help="The no-relation label (default: the dataset's own)."),
          skip_bad_lines: bool = typer.Option(False, "--skip-bad-lines",
                                              help="Skip bad lines and list them instead of stopping."),
          strict_images: bool = typer.Option(False, "--strict-images",
                                             help="Fully decode every present image; an unreadable one is an error "
                                                  "(by default it is a problem, counted as without image)."),
          as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON.")) -> None:
    """Per split: records, records with and without their image, label counts and problems found."""
    from rocmre.data.record import DataFormatError
    from rocmre.data.stats import dataset_stats, format_stats

    use_data_dir(data_dir)
    splits = [s.strip() for s in split.split(",") if s.strip()]
    if not splits:
        fail("--split needs at least one split name")
    with user_errors():
        try:
            result = dataset_stats(path, splits, fmt=fmt, negative_label=negative_label,
                                   skip_bad_lines=skip_bad_lines, strict_images=strict_images, data_dir=data_dir)
        except DataFormatError as e:
            hint = "" if skip_bad_lines or e.line is None else " (--skip-bad-lines skips such lines)"
            fail(f"{e}{hint}", code=1)
        except (FileNotFoundError, ValueError) as e:
            fail(str(e))
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2, default=str))
        else:
            typer.echo(format_stats(result))


@data_app.command("download")
def download(dataset: str = typer.Argument(..., help="Dataset to fetch: mnre."),
             to: Path = typer.Option(..., "--to", help="Folder to download into (created if needed)."),
             timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Network timeout in seconds."),
             images: bool = typer.Option(True, "--images/--no-images",
                                         help="Also fetch the ~1.2 GB image archive (needs rocmre[download])."),
             base_url: str | None = typer.Option(None, "--base-url", envvar="ROCMRE_MNRE_BASE_URL", hidden=True,
                                                 help="Mirror of the thecharm/MNRE raw files."),
             images_url: str | None = typer.Option(None, "--images-url",
                                                   help="Direct URL of an image archive (instead of Google Drive).")
             ) -> None:
    """Download MNRE (resumable, sha256-checked) into the official layout under --to."""
    from rocmre.data.download import LOCAL_COPY_HINT, DownloadError, download_mnre

    name = dataset.lower()
    if name == "more":
        fail("MORE is distributed only through Baidu Pan (see github.com/NJUNLP/MORE); fetch it by hand. "
             + LOCAL_COPY_HINT.replace("mnre_txt/ (official layout) or RE_data/txt/ (HVPNeT layout)", "txt/"))
    if name != "mnre":
        fail(f"unknown dataset {dataset!r}; only mnre can be downloaded")
    start = time.monotonic()

    def progress(rel: str, done: int, total: int | None) -> None:
        if total is not None and done == total:
            typer.echo(f"  {rel}: {done:,} bytes", err=True)

    try:
        result = download_mnre(to, timeout=timeout, images=images, base_url=base_url, images_url=images_url,
                               progress=progress)
    except DownloadError as e:
        fail(f"download failed after {time.monotonic() - start:.1f} s: {e}", code=1)
    except OSError as e:
        fail(f"cannot write to {to}: {e}", code=1)
    for w in result.warnings:
        typer.secho(f"warning: {w}", err=True, fg=typer.colors.YELLOW)
    typer.echo(f"MNRE text in {result.root / 'mnre_txt'} ({len(result.files)} files, sha256 verified)"
               + (f"; images in {result.images_dir}" if result.images_dir else "; no images"))
    typer.echo(f"read it with: ROCMRE_DATA={result.root} rocmre data stats")


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group."""
    app.add_typer(data_app, name="data")
