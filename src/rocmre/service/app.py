"""The HTTP service: ``create_app(extractor)`` gives a FastAPI app with /predict, /predict/batch, /relations,
/health and a small web page at /. Its parts: :mod:`~rocmre.service.schemas` (request and response models),
:mod:`~rocmre.service.limits` and :mod:`~rocmre.service.guards` (what a request may ask),
:mod:`~rocmre.service.batching` (concurrent requests share forward passes), :mod:`~rocmre.service.routes` and
:mod:`~rocmre.service.running` (uvicorn settings, a server in a thread)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from rocmre import __version__
from rocmre.inference.extractor import RelationExtractor
from rocmre.service.batching import DEFAULT_BATCH_DELAY_MS, DEFAULT_BATCH_SIZE, DEFAULT_MAX_QUEUE
from rocmre.service.guards import LOOPBACK_HOSTS, HostGuard, RequestGuard
from rocmre.service.limits import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_DESCRIPTION_CHARS,
    DEFAULT_MAX_DESCRIPTIONS,
    DEFAULT_MAX_EXAMPLES,
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_RELATIONS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_TEXT_CHARS,
    DEFAULT_MAX_TOKENS,
    Limits,
)
from rocmre.service.metrics import MetricsMiddleware
from rocmre.service.routes import add_error_handlers, add_page_routes, add_predict_routes, add_relation_routes
from rocmre.service.running import free_port, serve_in_thread
from rocmre.service.schemas import PredictRequest
from rocmre.service.service import Service

__all__ = ["Limits", "create_app", "free_port", "serve_in_thread"]
DEFAULT_BODY_TIMEOUT = 30.0
DESCRIPTION = "Multimodal relation extraction by retrieval over relation descriptions (ROC)."


def create_app(extractor: RelationExtractor, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               max_batch_size: int = DEFAULT_MAX_BATCH, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
               max_tokens: int = DEFAULT_MAX_TOKENS, max_descriptions: int = DEFAULT_MAX_DESCRIPTIONS,
               max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, max_relations: int = DEFAULT_MAX_RELATIONS,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, api_token: str | None = None,
               read_only: bool = False, max_examples: int = DEFAULT_MAX_EXAMPLES,
               allowed_hosts: Iterable[str] | None = None, body_timeout: float | None = DEFAULT_BODY_TIMEOUT,
               batch_size: int = DEFAULT_BATCH_SIZE, batch_delay_ms: float = DEFAULT_BATCH_DELAY_MS,
               max_queue: int = DEFAULT_MAX_QUEUE) -> FastAPI:
    """A FastAPI app serving ``extractor``.

    The ``max_*`` arguments bound what one request may ask (413/422 above them; ``max_batch_size``: items in one
    ``/predict/batch`` call; ``max_examples``: labelled examples per relation in ``POST /relations``);
    ``body_timeout``: seconds a request body may take to arrive (408 after; None: no limit). ``api_token`` makes
    POST/DELETE /relations require ``Authorization: Bearer <token>`` (401 otherwise); ``read_only`` refuses them
    (403). Without either, anyone who can reach the port can change the relation set. ``allowed_hosts``: the
    names the server answers to in the Host header (403 otherwise; ``"*"``: any), by default the loopback names;
    a request that changes something is also refused from a browser page of another origin.

    Predictions go through a dynamic batcher: concurrent requests share forward passes of up to ``batch_size``
    pairs, gathered for at most ``batch_delay_ms``; at most ``max_queue`` pairs wait (503 above). Answers do not
    depend on the company a request keeps (see :mod:`rocmre.service.batching`).
    """
    limits = Limits(max_request_bytes, max_batch_size, max_text_chars, max_tokens, max_descriptions,
                    max_description_chars, max_relations, max_image_pixels, max_examples)
    svc = Service(extractor, limits, api_token=api_token, read_only=read_only, batch_size=batch_size,
                  batch_delay_ms=batch_delay_ms, max_queue=max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await svc.batcher.close()

    app = FastAPI(title="rocmre", version=__version__, docs_url=None, redoc_url=None, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.extractor = extractor
    app.state.limits = limits
    app.state.service = svc
    app.state.allowed_hosts = list(LOOPBACK_HOSTS if allowed_hosts is None else allowed_hosts)
    add_error_handlers(app)
    add_predict_routes(app, svc)
    add_relation_routes(app, svc)
    add_page_routes(app, svc)
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    app.add_middleware(RequestGuard, max_bytes=max_request_bytes, body_timeout=body_timeout)
    app.add_middleware(HostGuard, allowed_hosts=app.state.allowed_hosts)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics,  # (outermost: runs first, sees every answer)
                       routes=lambda: [getattr(r, "path", "") for r in app.routes])
    return app


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with the request models the routes read themselves (so that their $refs resolve)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        request = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in request.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components.setdefault("PredictRequest", request)
        app.openapi_schema = schema
    return app.openapi_schema
