"""``rocmre serve``: the HTTP API and web page for a trained model."""

from __future__ import annotations

from pathlib import Path

import typer

from rocmre.cli.common import fail


def serve(model: Path = typer.Option(..., "--model", "-m", exists=True, file_okay=False, help="Model folder."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          port: int = typer.Option(8000, "--port", "-p", min=0, max=65535),
          max_request_mb: float = typer.Option(10.0, "--max-request-mb", min=0.001,
                                               help="Largest request body accepted (413 above)."),
          max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most pairs in one /predict/batch call."),
          descriptions: Path | None = typer.Option(None, "--descriptions", exists=True, dir_okay=False,
                                                   help="Relation descriptions replacing the model's set."),
          cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder."),
          device: str = typer.Option("cpu", "--device"),
          log_level: str = typer.Option("info", "--log-level")) -> None:
    """Serve a model over HTTP: POST /predict, /predict/batch, GET/POST /relations, /health, a web page at /."""
    try:
        import uvicorn

        from rocmre.service.app import create_app
    except ImportError as e:
        fail(f"serving needs the 'serve' extra (pip install 'rocmre[serve]'): {e}")
    from rocmre.inference.extractor import RelationExtractor

    try:
        extractor = RelationExtractor.from_pretrained(model, descriptions, device=device, cache_dir=cache_dir)
    except (OSError, ValueError, TypeError, KeyError) as e:
        fail(f"cannot load the model {model}: {e}")
    app = create_app(extractor, max_request_bytes=int(max_request_mb * 2 ** 20), max_batch_size=max_batch)
    typer.echo(f"serving {model} ({extractor.model.config.model_type}, {len(extractor.relations)} relations) on "
               f"http://{host}:{port}  (API docs: /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
