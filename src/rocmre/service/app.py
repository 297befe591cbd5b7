"""The HTTP service: ``create_app(extractor)`` gives a FastAPI app with /predict, /predict/batch, /relations,
/health and a small web page at /."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rocmre import __version__
from rocmre.inference.extractor import EntityNotFoundError, PairInput, Prediction, RelationExtractor

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_BATCH = 64
EntityType = Literal["person", "organization", "location", "miscellaneous", "object", "unknown"]


# -- request and response models ---------------------------------------------------------------
class EntityRef(BaseModel):
    """An entity by token offsets (``start``/``end``), character offsets (``char_start``/``char_end``), an
    image-object ``box`` (tail only), or just a ``name`` to locate in the text."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="The mention (located in the text when no offsets are given).")
    start: int | None = Field(None, ge=0, description="First token (with a token-list text).")
    end: int | None = Field(None, ge=1, description="One past the last token.")
    char_start: int | None = Field(None, ge=0, description="First character (with a string text).")
    char_end: int | None = Field(None, ge=1, description="One past the last character.")
    box: list[float] | None = Field(None, min_length=4, max_length=4,
                                    description="Image object [cx, cy, w, h], normalised (tail only).")
    type: EntityType | None = None

    def to_spec(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


EntitySpec = str | EntityRef


class PredictRequest(BaseModel):
    """One entity pair. ``text`` is a string or a token list; ``image`` is base64 (a ``data:`` URL is fine)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"text": "Barack Obama visited Paris", "head": "Barack Obama", "tail": "Paris", "top_k": 3}]})

    text: str | list[str] = Field(..., description="The sentence, or its tokens.")
    head: EntitySpec = Field(..., description="An entity string that occurs once, or an entity object.")
    tail: EntitySpec
    image: str | None = Field(None, description="The post's image, base64-encoded.")
    head_type: EntityType | None = None
    tail_type: EntityType | None = None
    top_k: int = Field(3, ge=1, le=100, description="Alternatives to return.")


class Candidate(BaseModel):
    relation: str
    score: float
    description: str | None = None


class PredictResponse(BaseModel):
    """The retrieved relation, its score and matched description, the top-k, and the resolved entities."""

    relation: str
    score: float
    description: str | None
    top_k: list[Candidate]
    head: dict[str, Any]
    tail: dict[str, Any]
    has_image: bool


class RelationInfo(BaseModel):
    name: str
    descriptions: list[str]


class RelationsResponse(BaseModel):
    model_type: str
    negative_label: str
    relations: list[RelationInfo]


class AddRelationsResponse(BaseModel):
    added: list[str] = Field(..., description="New relation names (others got extra descriptions).")
    relations: int = Field(..., description="Relations the model now retrieves from.")


class HealthResponse(BaseModel):
    status: str
    model_type: str
    relations: int
    version: str


class ErrorResponse(BaseModel):
    detail: str
    candidates: list[Any] | None = None


# -- request size limit ------------------------------------------------------------------------
class BodySizeLimit:
    """Answers 413 to a request whose body exceeds ``max_bytes`` (by Content-Length, or counted when chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Send, size: int | None) -> None:
        got = "a body" if size is None else f"a body of {size} bytes"
        body = json.dumps({"detail": f"request too large: {got} exceeds the limit of {self.max_bytes} bytes "
                                     f"({self.max_bytes / 2 ** 20:.1f} MB; see --max-request-mb)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = None
            if size is None or size > self.max_bytes:
                await self._reject(send, size)
                return
            await self.app(scope, receive, send)
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# -- helpers -----------------------------------------------------------------------------------
def decode_image(data: str | None) -> bytes | None:
    """Base64 (optionally a ``data:`` URL) to image bytes, checked to decode; 400 otherwise."""
    if data is None or data == "":
        return None
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "image: not valid base64") from None
    return check_image(raw)


def check_image(raw: bytes) -> bytes:
    """Image bytes that decode, or a 400 naming the problem."""
    from rocmre.backbones.images import ImageLoadError, open_image

    if not raw:
        raise HTTPException(400, "image: empty")
    try:
        open_image(raw, name="the uploaded image")
    except ImageLoadError as e:
        raise HTTPException(400, f"image: cannot be decoded ({e})") from None
    return raw


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def _to_pair(req: PredictRequest, image: bytes | None) -> PairInput:
    def spec(e: EntitySpec) -> Any:
        return e.to_spec() if isinstance(e, EntityRef) else e

    return PairInput(req.text, spec(req.head), spec(req.tail), image, req.head_type, req.tail_type)


def _form_entity(value: str) -> Any:
    value = value.strip()
    if value[:1] in "{[":
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(value)
    return value


# -- the app -----------------------------------------------------------------------------------
def create_app(extractor: RelationExtractor, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
               max_batch_size: int = DEFAULT_MAX_BATCH) -> FastAPI:
    """A FastAPI app serving ``extractor``; model calls run in a threadpool, one at a time."""
    app = FastAPI(title="rocmre", version=__version__,
                  description="Multimodal relation extraction by retrieval over relation descriptions (ROC).")
    lock = threading.Lock()
    model_type = extractor.model.config.model_type
    app.state.extractor = extractor

    async def locked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            with lock:
                return fn(*args, **kwargs)

        return await run_in_threadpool(call)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return JSONResponse({"detail": _validation_message(errors), "errors": json.loads(json.dumps(
            errors, default=str))}, status_code=422)

    @app.exception_handler(EntityNotFoundError)
    async def _entity(_: Request, exc: EntityNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "candidates": json.loads(json.dumps(exc.candidates))},
                            status_code=422)

    def run_batch(pairs: list[PairInput], top_k: list[int]) -> list[Prediction]:
        indexed: list[tuple[int, Prediction]] = []
        for i, pair in enumerate(pairs):  # resolve first, so an error names its item
            try:
                extractor.to_record(pair)
            except EntityNotFoundError as e:
                prefix = f"item {i}: " if len(pairs) > 1 else ""
                raise EntityNotFoundError(prefix + str(e), e.candidates) from None
            except (ValueError, TypeError) as e:
                prefix = f"item {i}: " if len(pairs) > 1 else ""
                raise HTTPException(422, prefix + str(e)) from None
        for k in sorted(set(top_k)):  # one batched call per distinct top_k
            idx = [i for i, kk in enumerate(top_k) if kk == k]
            preds = extractor.predict_batch([pairs[i] for i in idx], batch_size=32, top_k=k)
            indexed.extend(zip(idx, preds, strict=True))
        return [p for _, p in sorted(indexed, key=lambda x: x[0])]

    errors_doc: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse, "description": "Bad image (not base64, or not decodable)."},
        413: {"model": ErrorResponse, "description": "Request body (or batch) too large."},
        422: {"model": ErrorResponse, "description": "Invalid request, or an entity not found or ambiguous."},
    }

    multipart_schema = {
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

    @app.post("/predict", response_model=PredictResponse, responses=errors_doc, tags=["predict"],
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                  "multipart/form-data": {"schema": multipart_schema}}}})
    async def predict(request: Request) -> PredictResponse:
        """The relation between head and tail: a JSON body, or multipart/form-data with an uploaded image."""
        ctype = request.headers.get("content-type", "")
        image: bytes | None = None
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            fields: dict[str, Any] = {}
            if "request" in form:
                try:
                    fields = json.loads(str(form["request"]))
                except json.JSONDecodeError as e:
                    raise HTTPException(400, f"request: not valid JSON ({e.msg})") from None
                if not isinstance(fields, dict):
                    raise HTTPException(400, "request: must be a JSON object")
            for key in ("text", "head", "tail", "head_type", "tail_type", "top_k"):
                if key in form and key not in fields:
                    value = str(form[key])
                    fields[key] = _form_entity(value) if key in ("head", "tail") else value
            upload = form.get("image")
            if upload is not None and not isinstance(upload, str):
                image = check_image(await upload.read())
            elif isinstance(upload, str) and upload:
                fields["image"] = upload
        else:
            try:
                fields = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise HTTPException(400, "the body is not valid JSON (send application/json or "
                                         "multipart/form-data)") from None
        try:
            req = PredictRequest.model_validate(fields)
        except ValidationError as e:
            raise RequestValidationError(e.errors(include_url=False)) from None
        if image is None:
            image = decode_image(req.image)
        (pred,) = await locked(run_batch, [_to_pair(req, image)], [req.top_k])
        return PredictResponse.model_validate(pred.to_dict())

    @app.post("/predict/batch", response_model=list[PredictResponse], responses=errors_doc, tags=["predict"])
    async def predict_batch(items: list[PredictRequest]) -> list[PredictResponse]:
        """Many pairs at once (at most the server's max batch size), answered in order."""
        if len(items) > max_batch_size:
            raise HTTPException(413, f"batch of {len(items)} items exceeds the limit of {max_batch_size}")
        pairs = []
        for i, req in enumerate(items):
            try:
                pairs.append(_to_pair(req, decode_image(req.image)))
            except HTTPException as e:
                raise HTTPException(e.status_code, f"item {i}: {e.detail}") from None
        preds = await locked(run_batch, pairs, [r.top_k for r in items])
        return [PredictResponse.model_validate(p.to_dict()) for p in preds]

    def relations_response() -> RelationsResponse:
        described = extractor.describe_relations()
        return RelationsResponse(model_type=model_type, negative_label=extractor.model.config.negative_label,
                                 relations=[RelationInfo(name=n, descriptions=d) for n, d in described.items()])

    @app.get("/relations", response_model=RelationsResponse, tags=["relations"])
    async def get_relations() -> RelationsResponse:
        """Every relation the model retrieves from, with its descriptions (empty for a classifier)."""
        return await locked(relations_response)

    @app.post("/relations", response_model=AddRelationsResponse, responses=errors_doc, tags=["relations"])
    async def add_relations(body: dict[str, list[str]]) -> AddRelationsResponse:
        """Add relations (or descriptions to existing ones) without retraining: ``{name: [descriptions]}``."""
        if model_type != "roc":
            raise HTTPException(400, "this is a classification model: its label set is fixed, relations cannot "
                                     "be added (use a ROC model)")
        if not body:
            raise HTTPException(422, "give at least one relation: {name: [descriptions]}")
        for name, texts in body.items():
            if not name.strip():
                raise HTTPException(422, "a relation name is empty")
            if not texts or not all(t.strip() for t in texts):
                raise HTTPException(422, f"relation {name!r}: give at least one non-empty description")
        clean = {name.strip(): [t.strip() for t in texts] for name, texts in body.items()}
        added = await locked(extractor.add_relations, clean)
        return AddRelationsResponse(added=added, relations=len(extractor.relations))

    @app.delete("/relations", response_model=AddRelationsResponse, responses=errors_doc, tags=["relations"])
    async def delete_relation(name: str) -> AddRelationsResponse:
        """Remove a relation from retrieval (``?name=...``; not the negative label)."""
        if model_type != "roc":
            raise HTTPException(400, "this is a classification model: its label set is fixed")
        try:
            await locked(extractor.remove_relations, [name])
        except KeyError:
            raise HTTPException(404, f"unknown relation {name!r}") from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return AddRelationsResponse(added=[], relations=len(extractor.relations))

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health() -> HealthResponse:
        """Liveness, the model type and how many relations it knows."""
        return HealthResponse(status="ok", model_type=model_type, relations=len(extractor.relations),
                              version=__version__)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(BodySizeLimit, max_bytes=max_request_bytes)
    return app


# -- running -----------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int | None = None,
                    timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` under uvicorn in a background thread; yields the base URL once /health answers."""
    import httpx
    import uvicorn

    port = port or free_port(host)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name=f"rocmre-serve-{port}", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError(f"the server on {url} did not come up within {timeout} s")
        time.sleep(0.1)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
