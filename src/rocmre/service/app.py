"""The HTTP service: ``create_app(extractor)`` gives a FastAPI app with /predict, /predict/batch, /relations,
/health and a small web page at /. Its parts: :mod:`~rocmre.service.schemas` (request and response models),
:mod:`~rocmre.service.limits` and :mod:`~rocmre.service.guards` (what a request may ask), :mod:`~rocmre.service.routes`
and :mod:`~rocmre.service.running` (uvicorn in a thread)."""

from __future__ import annotations

from fastapi import FastAPI

from rocmre import __version__
from rocmre.inference.extractor import RelationExtractor
from rocmre.service.guards import RequestGuard
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
from rocmre.service.routes import add_error_handlers, add_page_routes, add_predict_routes, add_relation_routes
from rocmre.service.running import free_port, serve_in_thread
from rocmre.service.service import Service

__all__ = ["Limits", "create_app", "free_port", "serve_in_thread"]


def create_app(extractor: RelationExtractor, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               max_batch_size: int = DEFAULT_MAX_BATCH, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
               max_tokens: int = DEFAULT_MAX_TOKENS, max_descriptions: int = DEFAULT_MAX_DESCRIPTIONS,
               max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS, max_relations: int = DEFAULT_MAX_RELATIONS,
               max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, api_token: str | None = None,
               read_only: bool = False, max_examples: int = DEFAULT_MAX_EXAMPLES) -> FastAPI:
    """A FastAPI app serving ``extractor``; model calls run in a threadpool, one at a time.

    The ``max_*`` arguments bound what one request may ask (413/422 above them; ``max_examples``: labelled
    examples per relation in ``POST /relations``). ``api_token`` makes
    POST/DELETE /relations require ``Authorization: Bearer <token>`` (401 otherwise); ``read_only`` refuses them
    (403). Without either, anyone who can reach the port can change the relation set.
    """
    limits = Limits(max_request_bytes, max_batch_size, max_text_chars, max_tokens, max_descriptions,
                    max_description_chars, max_relations, max_image_pixels, max_examples)
    app = FastAPI(title="rocmre", version=__version__, docs_url=None, redoc_url=None,
                  description="Multimodal relation extraction by retrieval over relation descriptions (ROC).")
    svc = Service(extractor, limits, api_token=api_token, read_only=read_only)
    app.state.extractor = extractor
    app.state.limits = limits
    app.state.service = svc
    add_error_handlers(app)
    add_predict_routes(app, svc)
    add_relation_routes(app, svc)
    add_page_routes(app, svc)
    app.add_middleware(RequestGuard, max_bytes=max_request_bytes)
    return app
