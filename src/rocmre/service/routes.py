"""The HTTP routes: /predict, /predict/batch, /relations, /health, the web page and the API docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from rocmre import __version__
from rocmre.descriptions.store import RELATION_NUMBERS
from rocmre.inference.extractor import EntityNotFoundError
from rocmre.service.limits import (
    MAX_RELATION_NAME_CHARS,
    Refusal,
    check_image,
    check_request,
    clean_message,
    decode_image,
    form_entity,
    parse_json,
    prefixed,
    safe_text,
)
from rocmre.service.metrics import CONTENT_TYPE_LATEST, refuse_reason
from rocmre.service.schemas import (
    AddRelationsResponse,
    ErrorResponse,
    HealthResponse,
    PredictBatch,
    PredictRequest,
    PredictResponse,
    RelationExample,
    RelationsBody,
    RelationSpec,
    RelationsResponse,
)
from rocmre.service.service import Service, validate
from rocmre.service.text import label_key, nfc, shown_names, to_example, to_pair

STATIC_DIR = Path(__file__).resolve().parent / "static"
_UNION_TAGS = {"mention", "entity", "description-list", "relation-object"}

ERRORS_DOC: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Bad image (not base64, or not decodable), or bad JSON."},
    413: {"model": ErrorResponse, "description": "Request body, batch, text, tokens or image too large."},
    422: {"model": ErrorResponse, "description": "Invalid request, or an entity not found or ambiguous."},
}
WRITE_DOC: dict[int | str, dict[str, Any]] = {
    **ERRORS_DOC,
    401: {"model": ErrorResponse, "description": "A token is set (--api-token) and this request lacks it."},
    403: {"model": ErrorResponse, "description": "The server is read-only (--read-only)."},
}
MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "The image file."},
        "request": {"type": "string", "description": "The JSON PredictRequest (without image); or give the "
                    "fields below separately."},
        "text": {"type": "string"}, "head": {"type": "string", "description": "A string or a JSON object."},
        "tail": {"type": "string"}, "head_type": {"type": "string"}, "tail_type": {"type": "string"},
        "top_k": {"type": "integer"},
    },
}


# -- errors ------------------------------------------------------------------------------------
def validation_message(errors: list[dict[str, Any]]) -> str:
    """Up to five validation errors as one line: ``field.path: message; ...``."""
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":  # FastAPI's own parse (e.g. /predict/batch)
            reason = (err.get("ctx") or {}).get("error", "JSON decode error")
            parts.append(f"the body is not valid JSON ({reason}) at character {err.get('loc', ('', '?'))[-1]}; "
                         "send application/json")
            continue
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body" and x not in _UNION_TAGS)
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{loc or 'body'}: {msg}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return safe_text("; ".join(parts) + more)


def plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be huge, or nested deeply)."""
    return [{"loc": [x if isinstance(x, int) else safe_text(str(x)) for x in err.get("loc", ())
                     if x not in _UNION_TAGS],
             "msg": safe_text(str(err.get("msg", "")).removeprefix("Value error, ")), "type": str(err.get("type", ""))}
            for err in errors[:20]]


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        refuse_reason(request.scope, "invalid_request")
        errors = list(exc.errors())
        return JSONResponse({"detail": validation_message(errors), "errors": plain_errors(errors)}, status_code=422)

    @app.exception_handler(EntityNotFoundError)
    async def _entity(request: Request, exc: EntityNotFoundError) -> JSONResponse:
        refuse_reason(request.scope, "entity_not_found")
        return JSONResponse({"detail": safe_text(clean_message(exc)),
                             "candidates": json.loads(json.dumps(exc.candidates))}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if getattr(exc, "reason", None):
            refuse_reason(request.scope, exc.reason)  # type: ignore[attr-defined]
        if isinstance(exc.detail, str):  # whatever a message quotes, it serialises
            exc = StarletteHTTPException(exc.status_code, safe_text(exc.detail), exc.headers)
        return await http_exception_handler(request, exc)


# -- prediction --------------------------------------------------------------------------------
async def read_predict_request(request: Request) -> tuple[Any, bytes | None]:
    """The /predict fields (a JSON body, or multipart/form-data) and the uploaded image bytes, if any."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return parse_json(await request.body(), "the body", "send application/json or multipart/form-data"), None
    form = await request.form()
    fields: Any = {}
    if "request" in form:
        fields = parse_json(str(form["request"]), "request", "give the PredictRequest as a JSON object")
        if not isinstance(fields, dict):
            raise Refusal(400, "request: must be a JSON object", reason="bad_json")
    for key in ("text", "head", "tail", "head_type", "tail_type", "top_k"):
        if key in form and key not in fields:
            value = str(form[key])
            fields[key] = form_entity(value) if key in ("head", "tail") else value
    upload = form.get("image")
    upload_bytes: bytes | None = None
    if upload is not None and not isinstance(upload, str):
        upload_bytes = await upload.read()
        if not upload_bytes:
            raise Refusal(400, "image: the uploaded file is empty", reason="bad_image")
    elif isinstance(upload, str) and upload:
        fields["image"] = upload
    return fields, upload_bytes


def add_predict_routes(app: FastAPI, svc: Service) -> None:
    limits = svc.limits

    @app.post("/predict", response_model=PredictResponse, responses=ERRORS_DOC, tags=["predict"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                  "multipart/form-data": {"schema": MULTIPART_SCHEMA}}}})
    async def predict(request: Request) -> PredictResponse:
        """The relation between head and tail: a JSON body, or multipart/form-data with an uploaded image."""
        fields, upload_bytes = await read_predict_request(request)
        req = validate(PredictRequest, fields)
        check_request(req, limits)
        if upload_bytes is not None:
            image = await run_in_threadpool(check_image, upload_bytes, limits.max_image_pixels)
        else:
            image = await run_in_threadpool(decode_image, req.image, limits.max_image_pixels)
        pair, shown = to_pair(req, image)
        (pred,) = await svc.batcher.predict([pair], [req.top_k])
        return PredictResponse.model_validate(shown_names(pred.to_dict(), shown))

    @app.post("/predict/batch", response_model=list[PredictResponse], responses=ERRORS_DOC, tags=["predict"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "array", "items": {"$ref": "#/components/schemas/PredictRequest"}}}}}})
    async def predict_batch(request: Request) -> list[PredictResponse]:
        """Many pairs at once (at most the server's max batch size), answered in order."""
        raw = await read_batch(await request.body(), limits.max_batch_size)
        items: list[PredictRequest] = validate(PredictBatch, raw)
        pairs, names = [], []
        for i, req in enumerate(items):
            try:
                check_request(req, limits)
                image = await run_in_threadpool(decode_image, req.image, limits.max_image_pixels)
                pair, shown = to_pair(req, image)
            except HTTPException as e:
                raise prefixed(e, f"item {i}: ") from None
            pairs.append(pair)
            names.append(shown)
        preds = await svc.batcher.predict(pairs, [r.top_k for r in items]) if pairs else []
        return [PredictResponse.model_validate(shown_names(p.to_dict(), shown))
                for p, shown in zip(preds, names, strict=True)]


async def read_batch(body: bytes, max_items: int) -> Any:
    """The parsed /predict/batch body; 413 for a list of more than ``max_items`` before any item is validated, 422
    for a body that is not JSON. Large bodies are parsed in the threadpool."""
    def parse() -> Any:
        try:
            return json.loads(body)
        except json.JSONDecodeError as e:
            raise Refusal(422, f"the body is not valid JSON ({e.msg}) at character {e.pos}; send "
                               "application/json", reason="bad_json") from None
        except (UnicodeDecodeError, RecursionError, ValueError):
            return parse_json(body, "the body", "send a JSON list of pairs")  # its 400 naming the problem

    raw = parse() if len(body) < 65536 else await run_in_threadpool(parse)
    if isinstance(raw, list) and len(raw) > max_items:
        raise Refusal(413, f"batch of {len(raw)} items exceeds the limit of {max_items} (see --max-batch)",
                      reason="batch_too_large")
    return raw


# -- relations ---------------------------------------------------------------------------------
def relation_body_schema(max_examples: int) -> dict[str, Any]:
    """The OpenAPI schema of POST /relations' body."""
    relation_schema = {"oneOf": [
        {"type": "array", "items": {"type": "string"}, "description": "Descriptions."},
        {"type": "object", "additionalProperties": False, "properties": {
            "descriptions": {"type": "array", "items": {"type": "string"},
                             "description": "Descriptions; {head} and {tail} are filled with each pair's entities."},
            "examples": {"type": "array", "maxItems": max_examples, "items": {
                "type": "object", "required": ["text", "head", "tail"],
                "description": "A labelled pair: text, head, tail as in /predict, optional head_type/tail_type "
                               "(no image)."}},
            "head_types": {"type": "array", "items": {"type": "string"}},
            "tail_types": {"type": "array", "items": {"type": "string"}}}}]}
    return {"type": "object", "additionalProperties": relation_schema,
            "example": {"/per/org/plays_for": {
                "descriptions": ["{head} is an athlete who plays for {tail}, a sports team."],
                "examples": [{"text": "Lionel Messi scored for Inter Miami", "head": "Lionel Messi",
                              "tail": "Inter Miami"}]}}}


def check_relation(svc: Service, name: str, texts: list[str], examples: list[RelationExample]) -> None:
    """422/413 for a relation entry of POST /relations the server does not take."""
    limits = svc.limits
    if not name.strip():
        raise Refusal(422, "a relation name is empty", reason="bad_relation_name")
    if len(name) > MAX_RELATION_NAME_CHARS:
        raise Refusal(422, f"a relation name of {len(name):,} characters exceeds the limit of "
                           f"{MAX_RELATION_NAME_CHARS}", reason="bad_relation_name")
    if label_key(name) == label_key(svc.negative_label):
        raise Refusal(422, f"{name.strip()!r} is the negative label (the answer when no relation "
                           "holds): it cannot be added or described; choose another name", reason="negative_label_name")
    # an existing relation may be given only examples (add_relations refuses them for a new one)
    if (not texts and not examples) or not all(t.strip() for t in texts):
        raise Refusal(422, f"relation {name!r}: give at least one non-empty description", reason="bad_relation")
    if len(texts) > limits.max_descriptions:
        raise Refusal(413, f"relation {name!r}: {len(texts)} descriptions exceeds the limit of "
                           f"{limits.max_descriptions} per relation (see --max-descriptions)",
                      reason="too_many_descriptions")
    longest = max((len(t) for t in texts), default=0)
    if longest > limits.max_description_chars:
        raise Refusal(413, f"relation {name!r}: a description of {longest:,} characters exceeds the "
                           f"limit of {limits.max_description_chars:,} (see --max-description-chars)",
                      reason="description_too_long")
    if len(examples) > limits.max_examples:
        raise Refusal(413, f"relation {name!r}: {len(examples)} examples exceeds the limit of "
                           f"{limits.max_examples} per relation", reason="too_many_examples")
    for i, ex in enumerate(examples):
        try:
            check_request(PredictRequest(text=ex.text, head=ex.head, tail=ex.tail), limits)
        except HTTPException as e:
            raise prefixed(e, f"relation {name!r}, example {i}: ") from None


def clean_relations(svc: Service, raw: dict[str, Any]) -> dict[str, Any]:
    """A validated POST /relations body, checked entry by entry, in the form ``add_relations`` takes."""
    if not raw:
        raise Refusal(422, "give at least one relation: {name: [descriptions]}", reason="bad_relation")
    body: dict[str, list[str]] = {}
    examples: dict[str, list[RelationExample]] = {}
    specs: dict[str, RelationSpec] = {}
    for name, value in raw.items():
        if isinstance(value, RelationSpec):
            specs[name] = value
            body[name], examples[name] = value.descriptions, value.examples
        else:
            body[name], examples[name] = value, []
    for name, texts in body.items():
        check_relation(svc, name, texts, examples[name])
    clean: dict[str, Any] = {}
    for name, texts in body.items():
        descriptions = [nfc(t.strip()) for t in texts]
        spec = specs.get(name)
        clean[name.strip()] = descriptions if spec is None else {
            "descriptions": descriptions, "examples": [to_example(ex) for ex in spec.examples],
            "head_types": list(spec.head_types), "tail_types": list(spec.tail_types)} | {
            key: getattr(spec, key) for key in RELATION_NUMBERS if getattr(spec, key) is not None}
    return clean


def require_json(request: Request) -> None:
    """415 unless the request says its body is JSON (a browser form cannot: it sends text/plain or a form type)."""
    ctype = request.headers.get("content-type", "")
    if ctype.partition(";")[0].strip().lower() != "application/json":
        raise Refusal(415, f"send the body as JSON with the header 'Content-Type: application/json' (got "
                           f"{ctype or 'none'!r})", reason="not_json")


def add_relation_routes(app: FastAPI, svc: Service) -> None:
    bearer = HTTPBearer(auto_error=False, description="The server's API token (--api-token / ROCMRE_API_TOKEN).")

    def may_write(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        svc.check_write(credentials)

    @app.get("/relations", response_model=RelationsResponse, tags=["relations"])
    async def get_relations() -> RelationsResponse:
        """Every relation the model retrieves from, with its descriptions (empty for a classifier)."""
        return await svc.locked(svc.relations_response)

    @app.post("/relations", response_model=AddRelationsResponse, responses=WRITE_DOC, tags=["relations"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": relation_body_schema(svc.limits.max_examples)}}}})
    async def add_relations(request: Request, _: None = Depends(may_write)) -> AddRelationsResponse:  # noqa: B008
        """Add relations (or descriptions and examples to existing ones) without retraining:
        ``{name: [descriptions]}`` or ``{name: {"descriptions": [...], "examples": [...], "head_types": [...],
        "tail_types": [...]}}``. Descriptions may be templates with ``{head}``/``{tail}``; examples are labelled
        pairs (text, head, tail as in /predict, no image) whose mean pair vector the relation is also scored
        against."""
        if svc.model_type != "roc":
            raise Refusal(400, "this is a classification model: its label set is fixed, relations cannot "
                               "be added (use a ROC model)", reason="fixed_label_set")
        require_json(request)
        raw = validate(RelationsBody, parse_json(await request.body(), "the body",
                                                 'send a JSON object {"relation name": ["description", ...]}'))
        added = await svc.locked(svc.add_checked, clean_relations(svc, raw))
        return AddRelationsResponse(added=added, relations=len(svc.extractor.relations))

    @app.delete("/relations", response_model=AddRelationsResponse, responses=WRITE_DOC, tags=["relations"])
    async def delete_relation(name: str, _: None = Depends(may_write)) -> AddRelationsResponse:  # noqa: B008
        """Remove a relation from retrieval (``?name=...``; not the negative label)."""
        if svc.model_type != "roc":
            raise Refusal(400, "this is a classification model: its label set is fixed", reason="fixed_label_set")
        try:
            await svc.locked(svc.extractor.remove_relations, [name])
        except KeyError:
            raise Refusal(404, f"unknown relation {name!r} (GET /relations lists them)",
                          reason="unknown_relation") from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return AddRelationsResponse(added=[], relations=len(svc.extractor.relations))


# -- health, page, docs ------------------------------------------------------------------------
def docs_assets() -> Path | None:
    """The folder of Swagger UI / ReDoc files shipped by the ``fastapi-offline`` package, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


#: the one remote file ReDoc's bundle loads (its "API docs by Redocly" logo), served from here instead
REDOC_REMOTE_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
#: the API docs pages may load nothing from another host (the browser enforces it)
DOCS_CSP = "default-src 'self' 'unsafe-inline' 'unsafe-eval' data: blob:"


def offline_redoc(assets: Path) -> bytes:
    """ReDoc's bundle with its remote logo replaced by a local one (``/static/docs-logo.svg``)."""
    return (assets / "redoc.standalone.js").read_bytes().replace(REDOC_REMOTE_LOGO, b"/static/docs-logo.svg")


def add_page_routes(app: FastAPI, svc: Service) -> None:
    @app.get("/health", response_model=HealthResponse, tags=["service"])
    @app.head("/health", response_model=HealthResponse, include_in_schema=False)
    async def health() -> HealthResponse:
        """Liveness, the model type and how many relations it knows (never waits for the model)."""
        return HealthResponse(status="ok", model_type=svc.model_type, relations=len(svc.extractor.relations),
                              version=__version__)

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format."}})
    async def metrics() -> Response:
        """Prometheus metrics: requests and latency by route, refusals by status and reason, the batcher's queue
        depth, forward-pass sizes and times (never waits for the model)."""
        return Response(svc.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    assets = docs_assets()
    docs_kwargs: dict[str, str] = {}
    docs_headers: dict[str, str] = {}
    if assets is not None:  # Swagger UI and ReDoc from local files: /docs and /redoc work offline
        redoc_js = offline_redoc(assets)

        @app.get("/docs-assets/redoc.standalone.js", include_in_schema=False)
        async def redoc_bundle() -> Response:
            return Response(redoc_js, media_type="text/javascript")

        docs_headers = {"Content-Security-Policy": DOCS_CSP}
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
        docs_kwargs = {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
                       "swagger_css_url": "/docs-assets/swagger-ui.css",
                       "swagger_favicon_url": "/docs-assets/favicon.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        page = get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="rocmre - API",
                                   swagger_ui_parameters={"validatorUrl": None}, **docs_kwargs)
        page.headers.update(docs_headers)
        return page

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        extra = {"redoc_js_url": "/docs-assets/redoc.standalone.js",
                 "redoc_favicon_url": "/docs-assets/favicon.png"} if assets is not None else {}
        page = get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title="rocmre - API",
                              with_google_fonts=assets is None, **extra)
        page.headers.update(docs_headers)
        return page

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
