"""``rocmre serve``: the HTTP API and web page for a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from rocmre.cli.common import fail, precision_option, type_prior_option, type_prior_scope_option

LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def serve(model: Path = typer.Option(..., "--model", "-m", exists=True, file_okay=False, help="Model folder."),
          host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
          port: int = typer.Option(8000, "--port", "-p", min=0, max=65535),
          max_request_mb: float = typer.Option(10.0, "--max-request-mb", min=0.001,
                                               help="Largest request body accepted (413 above)."),
          max_batch: int = typer.Option(64, "--max-batch", min=1, help="Most pairs in one /predict/batch call."),
          max_text_chars: int = typer.Option(2000, "--max-text-chars", min=1,
                                             help="Longest text, in characters (413 above)."),
          max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="Most tokens in a text (413 above)."),
          max_descriptions: int = typer.Option(16, "--max-descriptions", min=1,
                                               help="Most descriptions per relation via POST /relations."),
          max_description_chars: int = typer.Option(500, "--max-description-chars", min=1,
                                                    help="Longest description accepted by POST /relations."),
          max_relations: int = typer.Option(100, "--max-relations", min=1,
                                            help="Most relations the model may hold after POST /relations."),
          max_examples: int = typer.Option(32, "--max-examples", min=0,
                                           help="Most labelled examples per relation in POST /relations."),
          max_image_megapixels: float = typer.Option(40.0, "--max-image-megapixels", min=0.001,
                                                     help="Largest uploaded image, in millions of pixels."),
          max_batch_size: int = typer.Option(32, "--max-batch-size", min=1,
                                             help="Dynamic batching: most pairs in one forward pass."),
          max_batch_delay_ms: float = typer.Option(2.0, "--max-batch-delay-ms", min=0.0,
                                                   help="Dynamic batching: longest wait for more requests."),
          max_queue: int = typer.Option(1024, "--max-queue", min=1,
                                        help="Most pairs waiting for the model (503 with Retry-After above)."),
          allowed_hosts: str | None = typer.Option(
              None, "--allowed-hosts", help="Comma-separated names the server answers to in the Host header (403 "
                                            "otherwise; '*': any). Default: the loopback names and --host."),
          timeout_keep_alive: int = typer.Option(5, "--timeout-keep-alive", min=1,
                                                 help="Seconds an idle keep-alive connection stays open."),
          limit_concurrency: int = typer.Option(1000, "--limit-concurrency", min=1,
                                                help="Most connections and requests at once (503 above)."),
          header_timeout: float = typer.Option(10.0, "--header-timeout", min=0.1,
                                               help="Seconds a request's headers may take (the connection closes)."),
          body_timeout: float = typer.Option(30.0, "--body-timeout", min=0.1,
                                             help="Seconds a request's body may take to arrive (408 after)."),
          api_token: str | None = typer.Option(None, "--api-token", envvar="ROCMRE_API_TOKEN",
                                               help="Require 'Authorization: Bearer TOKEN' for POST/DELETE "
                                                    "/relations (env ROCMRE_API_TOKEN)."),
          read_only: bool = typer.Option(False, "--read-only", help="Refuse POST/DELETE /relations (403)."),
          descriptions: Path | None = typer.Option(None, "--descriptions", exists=True, dir_okay=False,
                                                   help="Relation descriptions replacing the model's set."),
          cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Feature cache folder."),
          device: str = typer.Option("cpu", "--device"),
          type_prior: bool | None = type_prior_option(),
          type_prior_scope: str | None = type_prior_scope_option(),
          precision: str | None = precision_option(),
          log_level: str = typer.Option("info", "--log-level")) -> None:
    """Serve a model over HTTP: POST /predict, /predict/batch, GET/POST /relations, /health, a web page at /."""
    try:
        import uvicorn

        from rocmre.service.app import create_app
        from rocmre.service.guards import default_allowed_hosts
        from rocmre.service.running import freeze_loaded_objects, uvicorn_settings
    except ImportError as e:
        fail(f"serving needs the 'serve' extra (pip install 'rocmre[serve]'): {e}")
    from rocmre.inference.extractor import RelationExtractor

    if api_token is not None and not api_token.strip():
        fail("--api-token (or ROCMRE_API_TOKEN) is empty: give a non-empty token, or leave it unset")
    hosts = default_allowed_hosts(host) if allowed_hosts is None else [
        h.strip() for h in allowed_hosts.split(",") if h.strip()]
    if not hosts:
        fail("--allowed-hosts is empty: give the names clients use (e.g. localhost,myserver), or '*' for any")
    try:
        extractor = RelationExtractor.from_pretrained(model, descriptions, device=device, cache_dir=cache_dir,
                                                      precision=precision, type_prior=type_prior,
                                                      type_prior_scope=type_prior_scope)
    except (OSError, ValueError, TypeError, KeyError) as e:
        fail(f"cannot load the model {model}: {e}")
    app = create_app(extractor, max_request_bytes=int(max_request_mb * 2 ** 20), max_batch_size=max_batch,
                     max_text_chars=max_text_chars, max_tokens=max_tokens, max_descriptions=max_descriptions,
                     max_description_chars=max_description_chars, max_relations=max_relations,
                     max_examples=max_examples, max_image_pixels=int(max_image_megapixels * 1e6),
                     api_token=api_token, read_only=read_only, allowed_hosts=hosts, body_timeout=body_timeout,
                     batch_size=max_batch_size, batch_delay_ms=max_batch_delay_ms, max_queue=max_queue)
    startup_notes(extractor, model, host, port, hosts, read_only, api_token)
    freeze_loaded_objects()
    uvicorn.run(app, host=host, port=port, **uvicorn_settings(
        log_level=log_level, timeout_keep_alive=timeout_keep_alive, limit_concurrency=limit_concurrency,
        header_timeout=header_timeout))


def startup_notes(extractor: Any, model: Path, host: str, port: int, hosts: list[str], read_only: bool,
                  api_token: str | None) -> None:
    """What is served where, and who may change the relation set."""
    typer.echo(f"serving {model} ({extractor.model.config.model_type}, {len(extractor.relations)} relations) on "
               f"http://{host}:{port}  (API docs: /docs); answering to the hosts {', '.join(hosts)}", err=True)
    if read_only:
        typer.echo("relations are read-only (--read-only)", err=True)
    elif api_token is None:
        where = "anyone on this machine" if host in LOOPBACK else f"ANYONE who can reach {host}:{port}"
        typer.echo(f"note: {where} can add and delete relations; set --api-token or --read-only to prevent it",
                   err=True)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
