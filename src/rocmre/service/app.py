"""The HTTP service: ``create_app(extractor)`` gives a FastAPI app with /predict, /predict/batch, /relations,
/health and a small web page at /."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import re
import secrets
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rocmre import __version__
from rocmre.descriptions.store import RELATION_NUMBERS
from rocmre.inference.extractor import EntityNotFoundError, PairInput, Prediction, RelationExtractor, tokenize

STATIC_DIR = Path(__file__).resolve().parent / "static"
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_TEXT_CHARS = 2000
DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_DESCRIPTIONS = 16
DEFAULT_MAX_DESCRIPTION_CHARS = 500
DEFAULT_MAX_RELATIONS = 100
DEFAULT_MAX_EXAMPLES = 32
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000
MAX_JSON_DEPTH = 32
MAX_RELATION_NAME_CHARS = 200
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

    @model_validator(mode="after")
    def _complete(self) -> EntityRef:
        """Offsets come in pairs, end after start; one way of locating the entity; at least one given."""
        for first, last in (("start", "end"), ("char_start", "char_end")):
            a, b = getattr(self, first), getattr(self, last)
            if (a is None) != (b is None):
                given, missing = (first, last) if b is None else (last, first)
                raise ValueError(f"'{given}' needs '{missing}': give both {first!r} and {last!r}")
            if a is not None and b <= a:
                raise ValueError(f"'{last}' ({b}) must be greater than '{first}' ({a})")
        if self.start is not None and self.char_start is not None:
            raise ValueError("give token offsets ('start'/'end') or character offsets ('char_start'/'char_end'), "
                             "not both")
        if self.box is not None and (self.start is not None or self.char_start is not None):
            raise ValueError("an image object has a 'box' and no text offsets")
        if self.name is None and self.start is None and self.char_start is None and self.box is None:
            raise ValueError("give 'name', 'start'/'end', 'char_start'/'char_end' or 'box'")
        return self

    def to_spec(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def _entity_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "mention"
    if isinstance(value, dict | EntityRef):
        return "entity"
    return None


EntitySpec = Annotated[
    Annotated[str, Tag("mention")] | Annotated[EntityRef, Tag("entity")],
    Discriminator(_entity_kind, custom_error_type="entity_spec",
                  custom_error_message="an entity is a string that occurs in the text, or an object with 'name', "
                                       "'start'/'end', 'char_start'/'char_end' or 'box'")]
_UNION_TAGS = {"mention", "entity", "description-list", "relation-object"}


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
    examples: int = Field(0, description="Labelled examples the relation was added with (few-shot prototype).")


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


class RelationExample(BaseModel):
    """A labelled pair of a relation (the fields of a PredictRequest, without image and top_k)."""

    model_config = ConfigDict(extra="forbid")

    text: str | list[str] = Field(..., description="The sentence, or its tokens.")
    head: EntitySpec
    tail: EntitySpec
    head_type: EntityType | None = None
    tail_type: EntityType | None = None

    def to_example(self) -> dict[str, Any]:
        def spec(e: str | EntityRef) -> Any:
            return e.to_spec() if isinstance(e, EntityRef) else e

        return {"text": self.text, "head": spec(self.head), "tail": spec(self.tail)} | {
            k: v for k, v in (("head_type", self.head_type), ("tail_type", self.tail_type)) if v is not None}


class RelationSpec(BaseModel):
    """A relation to add: descriptions (templates with {head}/{tail} allowed), labelled examples, type signature."""

    model_config = ConfigDict(extra="forbid")

    descriptions: list[str] = Field(default_factory=list)
    examples: list[RelationExample] = Field(default_factory=list)
    head_types: list[EntityType] = Field(default_factory=list)
    tail_types: list[EntityType] = Field(default_factory=list)
    score_offset: float | None = Field(None, allow_inf_nan=False, ge=-10.0, le=10.0,
                                       description="Added to the relation's score before the decision (a negative "
                                                   "offset keeps a new relation from taking trained ones' pairs).")
    none_margin: float | None = Field(None, allow_inf_nan=False, ge=-10.0, le=10.0,
                                      description="The extra margin over None the relation must clear to be the "
                                                  "answer (its ranking among relations unchanged).")


def _relation_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "description-list"
    if isinstance(value, dict | RelationSpec):
        return "relation-object"
    return None


RelationValue = Annotated[
    Annotated[list[str], Tag("description-list")] | Annotated[RelationSpec, Tag("relation-object")],
    Discriminator(_relation_kind, custom_error_type="relation_spec",
                  custom_error_message="a relation is a list of descriptions, or an object with 'descriptions', "
                                       "'examples', 'head_types', 'tail_types', 'score_offset', 'none_margin'")]
RelationsBody = TypeAdapter(dict[str, RelationValue])


@dataclass(frozen=True)
class Limits:
    """What one request may ask of the server (each answered with 413 or 422 above it)."""

    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_batch_size: int = DEFAULT_MAX_BATCH
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_descriptions: int = DEFAULT_MAX_DESCRIPTIONS
    max_description_chars: int = DEFAULT_MAX_DESCRIPTION_CHARS
    max_relations: int = DEFAULT_MAX_RELATIONS
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_examples: int = DEFAULT_MAX_EXAMPLES


# -- request guard: body size and JSON nesting -------------------------------------------------
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON document nests arrays/objects more than ``limit`` levels (C-speed scan, no parsing)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    import numpy as np

    brackets = _JSON_STRING.sub(b'""', body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    codes = np.frombuffer(brackets, dtype=np.uint8)
    depth = np.cumsum(np.where((codes == ord("[")) | (codes == ord("{")), 1, -1))
    return int(depth.max()) > limit


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """Reads a request body whole before the app sees it: 413 above ``max_bytes`` (by Content-Length, or counted
    when chunked), 400 for JSON nested deeper than ``max_depth``; a client that disconnects meanwhile is dropped
    quietly."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    async def _too_large(self, send: Send, size: int | None) -> None:
        got = "a body" if size is None else f"a body of {size} bytes"
        await _send_json(send, 413, {"detail": f"request too large: {got} exceeds the limit of {self.max_bytes} "
                                               f"bytes ({self.max_bytes / 2 ** 20:.1f} MB; see --max-request-mb)"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH", "DELETE"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size: int | None = int(length)
            except ValueError:
                size = None
            if size is None or size > self.max_bytes:
                await self._too_large(send, size)
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        if body and not ctype.startswith("multipart/") and await run_in_threadpool(json_too_deep, body,
                                                                                   self.max_depth):
            await _send_json(send, 400, {"detail": f"the JSON body nests arrays/objects more than {self.max_depth} "
                                                   "levels deep; a request needs at most 4"})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# -- helpers -----------------------------------------------------------------------------------
_OBJECT_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>|<\d+ bytes>")


def clean_message(message: object) -> str:
    """An error message for a client: in-memory image objects are named as "the uploaded image"."""
    return _OBJECT_REPR.sub("the uploaded image", str(message))


def parse_json(raw: bytes | str, what: str, accepted: str = "send application/json") -> Any:
    """Parse a JSON document, or a 400 naming ``what`` and what is ``accepted``."""
    if isinstance(raw, str):
        raw = raw.encode()
    if json_too_deep(raw):
        raise HTTPException(400, f"{what}: nests arrays/objects more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise HTTPException(400, f"{what} is not valid JSON ({reason}); {accepted}") from None
    except RecursionError:
        raise HTTPException(400, f"{what}: nested too deeply") from None


def decode_image(data: str | None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bytes | None:
    """Base64 (optionally a ``data:`` URL) to image bytes, checked to decode; 400 otherwise. Blocking: call it
    in the threadpool."""
    if data is None or data == "":
        return None
    if data.startswith("data:"):
        _, _, data = data.partition(",")
    try:
        raw = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "image: not valid base64") from None
    return check_image(raw, max_pixels)


def check_image(raw: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bytes:
    """Image bytes that decode and have at most ``max_pixels`` pixels; 400 or 413 naming the problem. Blocking:
    call it in the threadpool."""
    from PIL import Image

    from rocmre.backbones.images import ImageLoadError, open_image

    if not raw:
        raise HTTPException(400, "image: empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as probe:  # reads the header only
                width, height = probe.size
    except Image.DecompressionBombError:
        raise HTTPException(413, f"image: too many pixels (the limit is {max_pixels:,}; see "
                                 "--max-image-megapixels)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise HTTPException(400, f"image: cannot be decoded ({clean_message(e)}); send a JPEG, PNG, GIF, BMP or "
                                 "WebP file") from None
    if width * height > max_pixels:
        raise HTTPException(413, f"image: {width}x{height} pixels exceeds the limit of {max_pixels:,} pixels "
                                 "(see --max-image-megapixels)")
    try:
        open_image(raw, name="the uploaded image")
    except ImageLoadError as e:
        raise HTTPException(400, f"image: cannot be decoded ({clean_message(e)})") from None
    return raw


def _validation_message(errors: list[dict[str, Any]]) -> str:
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
    return "; ".join(parts) + more


def _plain_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the offending input (it may be huge, or nested deeply)."""
    return [{"loc": [x if isinstance(x, int) else str(x) for x in err.get("loc", ()) if x not in _UNION_TAGS],
             "msg": str(err.get("msg", "")).removeprefix("Value error, "), "type": str(err.get("type", ""))}
            for err in errors[:20]]


def _to_pair(req: PredictRequest, image: bytes | None) -> PairInput:
    def spec(e: str | EntityRef) -> Any:
        return e.to_spec() if isinstance(e, EntityRef) else e

    return PairInput(req.text, spec(req.head), spec(req.tail), image, req.head_type, req.tail_type)


def _form_entity(value: str) -> Any:
    value = value.strip()
    if value[:1] in "{[":
        with contextlib.suppress(json.JSONDecodeError, RecursionError):
            if not json_too_deep(value.encode()):
                return json.loads(value)
    return value


def _docs_assets() -> Path | None:
    """The folder of Swagger UI / ReDoc files shipped by the ``fastapi-offline`` package, if installed."""
    try:
        import fastapi_offline
    except ImportError:
        return None
    folder = Path(fastapi_offline.__file__).resolve().parent / "static"
    return folder if (folder / "swagger-ui-bundle.js").is_file() else None


def check_request(req: PredictRequest, limits: Limits) -> None:
    """413 when the text, its tokens or an entity name exceed the server's limits (before any model work)."""
    text = req.text
    chars = len(text) if isinstance(text, str) else sum(len(t) for t in text) + max(0, len(text) - 1)
    if chars > limits.max_text_chars:
        raise HTTPException(413, f"text: {chars:,} characters exceeds the limit of {limits.max_text_chars:,} "
                                 "characters (see --max-text-chars)")
    tokens = len(tokenize(text)[0]) if isinstance(text, str) else len(text)
    if tokens > limits.max_tokens:
        raise HTTPException(413, f"text: {tokens:,} tokens exceeds the limit of {limits.max_tokens:,} tokens "
                                 "(see --max-tokens)")
    for role, entity in (("head", req.head), ("tail", req.tail)):
        name = entity if isinstance(entity, str) else entity.name
        if name is not None and len(name) > limits.max_text_chars:
            raise HTTPException(413, f"{role}: a name of {len(name):,} characters exceeds the limit of "
                                     f"{limits.max_text_chars:,} characters (see --max-text-chars)")


def check_pair(pair: PairInput, extractor: RelationExtractor) -> None:
    """Resolve ``pair`` (raising the resolver's ValueError/TypeError) and refuse pairs no relation can hold for:
    head and tail on the same or overlapping spans, or an image-object tail without an image."""
    record = extractor.to_record(pair)
    head, tail = record.head, record.tail
    if tail.is_object:
        if pair.image is None:
            raise ValueError("tail: an image-object tail (box) needs an image: send 'image' too")
        return
    if head.is_object:
        raise ValueError("the head must be a text span")
    (hs, he), (ts, te) = head.span, tail.span
    if (hs, he) == (ts, te):
        raise ValueError(f"head and tail are the same span [{hs}, {he}) ({head.name!r}): a relation needs two "
                         "different entities")
    if hs < te and ts < he:
        raise ValueError(f"head [{hs}, {he}) ({head.name!r}) and tail [{ts}, {te}) ({tail.name!r}) overlap: mark "
                         "two separate spans")


# -- the app -----------------------------------------------------------------------------------
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
    import asyncio

    limits = Limits(max_request_bytes, max_batch_size, max_text_chars, max_tokens, max_descriptions,
                    max_description_chars, max_relations, max_image_pixels, max_examples)
    app = FastAPI(title="rocmre", version=__version__, docs_url=None, redoc_url=None,
                  description="Multimodal relation extraction by retrieval over relation descriptions (ROC).")
    model_lock = threading.Lock()
    queue = asyncio.Lock()  # waiting requests queue here (in order), not in threadpool workers
    model_type = extractor.model.config.model_type
    negative_label = extractor.model.config.negative_label
    app.state.extractor = extractor
    app.state.limits = limits

    async def locked(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            with model_lock:
                return fn(*args, **kwargs)

        async with queue:
            return await run_in_threadpool(call)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse({"detail": _validation_message(errors), "errors": _plain_errors(errors)}, status_code=422)

    @app.exception_handler(EntityNotFoundError)
    async def _entity(_: Request, exc: EntityNotFoundError) -> JSONResponse:
        return JSONResponse({"detail": clean_message(exc), "candidates": json.loads(json.dumps(exc.candidates))},
                            status_code=422)

    def validate(model: type[BaseModel] | TypeAdapter, data: Any) -> Any:
        try:
            return model.validate_python(data) if isinstance(model, TypeAdapter) else model.model_validate(data)
        except ValidationError as e:
            raise RequestValidationError(e.errors(include_url=False)) from None

    def run_batch(pairs: list[PairInput], top_k: list[int]) -> list[Prediction]:
        for i, pair in enumerate(pairs):  # resolve first, so an error names its item
            prefix = f"item {i}: " if len(pairs) > 1 else ""
            try:
                check_pair(pair, extractor)
            except EntityNotFoundError as e:
                raise EntityNotFoundError(prefix + clean_message(e), e.candidates) from None
            except (ValueError, TypeError) as e:
                raise HTTPException(422, prefix + clean_message(e)) from None
        indexed: list[tuple[int, Prediction]] = []
        try:
            for k in sorted(set(top_k)):  # one batched call per distinct top_k
                idx = [i for i, kk in enumerate(top_k) if kk == k]
                preds = extractor.predict_batch([pairs[i] for i in idx], batch_size=32, top_k=k)
                indexed.extend(zip(idx, preds, strict=True))
        except (ValueError, TypeError) as e:
            raise HTTPException(422, clean_message(e)) from None
        except MemoryError:
            raise HTTPException(413, "the input is too large to process (out of memory)") from None
        return [p for _, p in sorted(indexed, key=lambda x: x[0])]

    errors_doc: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse, "description": "Bad image (not base64, or not decodable), or bad JSON."},
        413: {"model": ErrorResponse, "description": "Request body, batch, text, tokens or image too large."},
        422: {"model": ErrorResponse, "description": "Invalid request, or an entity not found or ambiguous."},
    }
    write_doc: dict[int | str, dict[str, Any]] = {
        **errors_doc,
        401: {"model": ErrorResponse, "description": "A token is set (--api-token) and this request lacks it."},
        403: {"model": ErrorResponse, "description": "The server is read-only (--read-only)."},
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
        upload_bytes: bytes | None = None
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            fields: Any = {}
            if "request" in form:
                fields = parse_json(str(form["request"]), "request", "give the PredictRequest as a JSON object")
                if not isinstance(fields, dict):
                    raise HTTPException(400, "request: must be a JSON object")
            for key in ("text", "head", "tail", "head_type", "tail_type", "top_k"):
                if key in form and key not in fields:
                    value = str(form[key])
                    fields[key] = _form_entity(value) if key in ("head", "tail") else value
            upload = form.get("image")
            if upload is not None and not isinstance(upload, str):
                upload_bytes = await upload.read()
                if not upload_bytes:
                    raise HTTPException(400, "image: the uploaded file is empty")
            elif isinstance(upload, str) and upload:
                fields["image"] = upload
        else:
            fields = parse_json(await request.body(), "the body", "send application/json or multipart/form-data")
        req = validate(PredictRequest, fields)
        check_request(req, limits)
        if upload_bytes is not None:
            image = await run_in_threadpool(check_image, upload_bytes, limits.max_image_pixels)
        else:
            image = await run_in_threadpool(decode_image, req.image, limits.max_image_pixels)
        (pred,) = await locked(run_batch, [_to_pair(req, image)], [req.top_k])
        return PredictResponse.model_validate(pred.to_dict())

    @app.post("/predict/batch", response_model=list[PredictResponse], responses=errors_doc, tags=["predict"])
    async def predict_batch(items: list[PredictRequest]) -> list[PredictResponse]:
        """Many pairs at once (at most the server's max batch size), answered in order."""
        if len(items) > limits.max_batch_size:
            raise HTTPException(413, f"batch of {len(items)} items exceeds the limit of {limits.max_batch_size} "
                                     "(see --max-batch)")
        pairs = []
        for i, req in enumerate(items):
            try:
                check_request(req, limits)
                image = await run_in_threadpool(decode_image, req.image, limits.max_image_pixels)
            except HTTPException as e:
                raise HTTPException(e.status_code, f"item {i}: {e.detail}") from None
            pairs.append(_to_pair(req, image))
        preds = await locked(run_batch, pairs, [r.top_k for r in items])
        return [PredictResponse.model_validate(p.to_dict()) for p in preds]

    def relations_response() -> RelationsResponse:
        described = extractor.describe_relations()
        examples = extractor.relation_examples()
        return RelationsResponse(model_type=model_type, negative_label=negative_label,
                                 relations=[RelationInfo(name=n, descriptions=d, examples=len(examples.get(n, [])))
                                            for n, d in described.items()])

    bearer = HTTPBearer(auto_error=False, description="The server's API token (--api-token / ROCMRE_API_TOKEN).")

    def may_write(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        """403 on a read-only server; 401 without the right bearer token when one is set."""
        if read_only:
            raise HTTPException(403, "this server is read-only (--read-only): relations cannot be added or removed")
        if api_token is None:
            return
        if credentials is None:
            raise HTTPException(401, "changing relations needs the header 'Authorization: Bearer <token>' with the "
                                     "server's API token (--api-token / ROCMRE_API_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        if not secrets.compare_digest(credentials.credentials.encode(), api_token.encode()):
            raise HTTPException(401, "wrong API token", headers={"WWW-Authenticate": "Bearer"})

    @app.get("/relations", response_model=RelationsResponse, tags=["relations"])
    async def get_relations() -> RelationsResponse:
        """Every relation the model retrieves from, with its descriptions (empty for a classifier)."""
        return await locked(relations_response)

    def add_checked(clean: dict[str, Any]) -> list[str]:
        current = extractor.describe_relations()
        current_examples = extractor.relation_examples()
        new = [n for n in clean if n not in current]
        if len(current) + len(new) > limits.max_relations:
            raise HTTPException(413, f"adding {len(new)} relations would make {len(current) + len(new)}, above the "
                                     f"limit of {limits.max_relations} (see --max-relations)")
        for name, spec in clean.items():
            texts = spec["descriptions"] if isinstance(spec, dict) else spec
            total = len(current.get(name, [])) + len(texts)
            if total > limits.max_descriptions:
                raise HTTPException(413, f"relation {name!r}: {total} descriptions exceeds the limit of "
                                         f"{limits.max_descriptions} per relation (see --max-descriptions)")
            n_examples = len(current_examples.get(name, [])) + (len(spec["examples"]) if isinstance(spec, dict)
                                                                else 0)
            if n_examples > limits.max_examples:
                raise HTTPException(413, f"relation {name!r}: {n_examples} examples exceeds the limit of "
                                         f"{limits.max_examples} per relation")
        try:
            added = extractor.add_relations(clean)
        except (ValueError, TypeError) as e:  # a bad template or an example whose entities cannot be resolved
            raise HTTPException(422, clean_message(e)) from None
        with contextlib.suppress(AttributeError, TypeError):  # encode the new set now, not on the next predict
            import torch

            with torch.inference_mode():
                extractor.model.description_vectors()
        return added

    relation_schema = {"oneOf": [
        {"type": "array", "items": {"type": "string"}, "description": "Descriptions."},
        {"type": "object", "additionalProperties": False, "properties": {
            "descriptions": {"type": "array", "items": {"type": "string"},
                             "description": "Descriptions; {head} and {tail} are filled with each pair's entities."},
            "examples": {"type": "array", "maxItems": limits.max_examples, "items": {
                "type": "object", "required": ["text", "head", "tail"],
                "description": "A labelled pair: text, head, tail as in /predict, optional head_type/tail_type "
                               "(no image)."}},
            "head_types": {"type": "array", "items": {"type": "string"}},
            "tail_types": {"type": "array", "items": {"type": "string"}}}}]}

    @app.post("/relations", response_model=AddRelationsResponse, responses=write_doc, tags=["relations"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "additionalProperties": relation_schema,
                  "example": {"/per/org/plays_for": {
                      "descriptions": ["{head} is an athlete who plays for {tail}, a sports team."],
                      "examples": [{"text": "Lionel Messi scored for Inter Miami", "head": "Lionel Messi",
                                    "tail": "Inter Miami"}]}}}}}}})
    async def add_relations(request: Request, _: None = Depends(may_write)) -> AddRelationsResponse:  # noqa: B008
        """Add relations (or descriptions and examples to existing ones) without retraining:
        ``{name: [descriptions]}`` or ``{name: {"descriptions": [...], "examples": [...], "head_types": [...],
        "tail_types": [...]}}``. Descriptions may be templates with ``{head}``/``{tail}``; examples are labelled
        pairs (text, head, tail as in /predict, no image) whose mean pair vector the relation is also scored
        against."""
        if model_type != "roc":
            raise HTTPException(400, "this is a classification model: its label set is fixed, relations cannot "
                                     "be added (use a ROC model)")
        raw = validate(RelationsBody, parse_json(await request.body(), "the body",
                                                 'send a JSON object {"relation name": ["description", ...]}'))
        if not raw:
            raise HTTPException(422, "give at least one relation: {name: [descriptions]}")
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
            if not name.strip():
                raise HTTPException(422, "a relation name is empty")
            if len(name) > MAX_RELATION_NAME_CHARS:
                raise HTTPException(422, f"a relation name of {len(name):,} characters exceeds the limit of "
                                         f"{MAX_RELATION_NAME_CHARS}")
            if name.strip().casefold() == negative_label.casefold():
                raise HTTPException(422, f"{name.strip()!r} is the negative label (the answer when no relation "
                                         "holds): it cannot be added or described; choose another name")
            # an existing relation may be given only examples (add_relations refuses them for a new one)
            if (not texts and not examples[name]) or not all(t.strip() for t in texts):
                raise HTTPException(422, f"relation {name!r}: give at least one non-empty description")
            if len(texts) > limits.max_descriptions:
                raise HTTPException(413, f"relation {name!r}: {len(texts)} descriptions exceeds the limit of "
                                         f"{limits.max_descriptions} per relation (see --max-descriptions)")
            longest = max((len(t) for t in texts), default=0)
            if longest > limits.max_description_chars:
                raise HTTPException(413, f"relation {name!r}: a description of {longest:,} characters exceeds the "
                                         f"limit of {limits.max_description_chars:,} (see --max-description-chars)")
            if len(examples[name]) > limits.max_examples:
                raise HTTPException(413, f"relation {name!r}: {len(examples[name])} examples exceeds the limit of "
                                         f"{limits.max_examples} per relation")
            for i, ex in enumerate(examples[name]):
                try:
                    check_request(PredictRequest(text=ex.text, head=ex.head, tail=ex.tail), limits)
                except HTTPException as e:
                    raise HTTPException(e.status_code, f"relation {name!r}, example {i}: {e.detail}") from None
        clean: dict[str, Any] = {}
        for name, texts in body.items():
            descriptions = [t.strip() for t in texts]
            spec = specs.get(name)
            clean[name.strip()] = descriptions if spec is None else {
                "descriptions": descriptions, "examples": [ex.to_example() for ex in spec.examples],
                "head_types": list(spec.head_types), "tail_types": list(spec.tail_types)} | {
                key: getattr(spec, key) for key in RELATION_NUMBERS if getattr(spec, key) is not None}
        added = await locked(add_checked, clean)
        return AddRelationsResponse(added=added, relations=len(extractor.relations))

    @app.delete("/relations", response_model=AddRelationsResponse, responses=write_doc, tags=["relations"])
    async def delete_relation(name: str, _: None = Depends(may_write)) -> AddRelationsResponse:  # noqa: B008
        """Remove a relation from retrieval (``?name=...``; not the negative label)."""
        if model_type != "roc":
            raise HTTPException(400, "this is a classification model: its label set is fixed")
        try:
            await locked(extractor.remove_relations, [name])
        except KeyError:
            raise HTTPException(404, f"unknown relation {name!r} (GET /relations lists them)") from None
        except ValueError as e:
            raise HTTPException(400, str(e)) from None
        return AddRelationsResponse(added=[], relations=len(extractor.relations))

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    @app.head("/health", response_model=HealthResponse, include_in_schema=False)
    async def health() -> HealthResponse:
        """Liveness, the model type and how many relations it knows (never waits for the model)."""
        return HealthResponse(status="ok", model_type=model_type, relations=len(extractor.relations),
                              version=__version__)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    assets = _docs_assets()
    docs_kwargs: dict[str, str] = {}
    if assets is not None:  # Swagger UI and ReDoc from local files: /docs works offline
        app.mount("/docs-assets", StaticFiles(directory=assets), name="docs-assets")
        docs_kwargs = {"swagger_js_url": "/docs-assets/swagger-ui-bundle.js",
                       "swagger_css_url": "/docs-assets/swagger-ui.css",
                       "swagger_favicon_url": "/docs-assets/favicon.png"}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="rocmre - API",
                                   swagger_ui_parameters={"validatorUrl": None}, **docs_kwargs)

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        extra = {"redoc_js_url": "/docs-assets/redoc.standalone.js",
                 "redoc_favicon_url": "/docs-assets/favicon.png"} if assets is not None else {}
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title="rocmre - API",
                              with_google_fonts=assets is None, **extra)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(RequestGuard, max_bytes=max_request_bytes)
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
