"""What one request may ask of the server, and the checks that hold it to that: JSON nesting, text and token
counts, images (format, size, decodability) and entity pairs. Each refusal is an HTTPException naming the problem."""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import re
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException

from rocmre.data.record import RelationRecord
from rocmre.inference.extractor import PairInput, RelationExtractor, tokenize
from rocmre.service.schemas import PredictRequest

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


class Refusal(HTTPException):
    """An HTTPException that names its ``reason`` (a short label, e.g. ``queue_full``) for the refusal metrics."""

    def __init__(self, status_code: int, detail: str, reason: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code, detail, headers)
        self.reason = reason


def prefixed(error: HTTPException, prefix: str) -> HTTPException:
    """``error`` with ``prefix`` before its detail (naming the item of a batch), its reason and headers kept."""
    return Refusal(error.status_code, f"{prefix}{error.detail}", getattr(error, "reason", None), error.headers)


# -- JSON --------------------------------------------------------------------------------------
#: a JSON string, or an unterminated one running to the end; possessive quantifiers never backtrack, so a scan is
#: linear in the body whatever it holds (a string of escaped quotes included)
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a JSON document nests arrays/objects more than ``limit`` levels: strings are dropped by one
    linear regex pass, the brackets left are counted by a cumulative sum (C speed, no parsing)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    import numpy as np

    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    if len(brackets) <= limit:
        return False
    codes = np.frombuffer(brackets, dtype=np.uint8)
    steps = np.where((codes == ord("[")) | (codes == ord("{")), np.int8(1), np.int8(-1))
    return int(np.cumsum(steps, dtype=np.int32).max()) > limit


def parse_json(raw: bytes | str, what: str, accepted: str = "send application/json") -> Any:
    """Parse a JSON document, or a 400 naming ``what`` and what is ``accepted``."""
    if isinstance(raw, str):
        raw = raw.encode()
    if json_too_deep(raw):
        raise Refusal(400, f"{what}: nests arrays/objects more than {MAX_JSON_DEPTH} levels deep",
                      reason="json_too_deep")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
        raise Refusal(400, f"{what} is not valid JSON ({reason}); {accepted}", reason="bad_json") from None
    except RecursionError:
        raise Refusal(400, f"{what}: nested too deeply", reason="json_too_deep") from None
    except ValueError:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise Refusal(400, f"{what} is not valid JSON for this server (a number with more than "
                           f"{sys.get_int_max_str_digits():,} digits); {accepted}", reason="bad_json") from None


def form_entity(value: str) -> Any:
    """A multipart entity field: a JSON object or list when it looks like one, else the mention string."""
    value = value.strip()
    if value[:1] in "{[":
        with contextlib.suppress(ValueError, RecursionError):  # not JSON, or a number of too many digits
            if not json_too_deep(value.encode()):
                return json.loads(value)
    return value


# -- messages ----------------------------------------------------------------------------------
_OBJECT_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>|<\d+ bytes>")


def clean_message(message: object) -> str:
    """An error message for a client: in-memory image objects are named as "the uploaded image"."""
    return _OBJECT_REPR.sub("the uploaded image", str(message))


def safe_text(text: str) -> str:
    """``text`` with anything UTF-8 cannot encode (lone surrogates) written as a ``\\uXXXX`` escape, so that an
    answer quoting it always serialises."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# -- images ------------------------------------------------------------------------------------
#: the only formats decoded (Pillow's names), told from the file's header before anything is decoded
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
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
        raise Refusal(400, "image: not valid base64", reason="bad_image") from None
    return check_image(raw, max_pixels)


def check_image(raw: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> bytes:
    """Image bytes that decode and have at most ``max_pixels`` pixels; 400 or 413 naming the problem. Blocking:
    call it in the threadpool."""
    from PIL import Image

    from rocmre.backbones.images import ImageLoadError, open_image

    if not raw:
        raise Refusal(400, "image: empty", reason="bad_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw), formats=IMAGE_FORMATS) as probe:  # reads the header only
                width, height = probe.size
    except Image.DecompressionBombError:
        raise Refusal(413, f"image: too many pixels (the limit is {max_pixels:,}; see "
                           "--max-image-megapixels)", reason="image_too_large") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise Refusal(400, f"image: cannot be decoded ({clean_message(e)}); send a JPEG, PNG, GIF, BMP or "
                           "WebP file", reason="bad_image") from None
    if width * height > max_pixels:
        raise Refusal(413, f"image: {width}x{height} pixels exceeds the limit of {max_pixels:,} pixels "
                           "(see --max-image-megapixels)", reason="image_too_large")
    try:
        open_image(raw, name="the uploaded image", formats=IMAGE_FORMATS)  # decoded as the header said
    except ImageLoadError as e:
        raise Refusal(400, f"image: cannot be decoded ({clean_message(e)})", reason="bad_image") from None
    return raw


# -- pairs -------------------------------------------------------------------------------------
def check_request(req: PredictRequest, limits: Limits) -> None:
    """413 when the text, its tokens (those of its NFC form, as the model sees it) or an entity name exceed the
    server's limits (before any model work)."""
    text = req.text
    chars = len(text) if isinstance(text, str) else sum(len(t) for t in text) + max(0, len(text) - 1)
    if chars > limits.max_text_chars:
        raise Refusal(413, f"text: {chars:,} characters exceeds the limit of {limits.max_text_chars:,} "
                           "characters (see --max-text-chars)", reason="text_too_long")
    tokens = len(tokenize(unicodedata.normalize("NFC", text))[0]) if isinstance(text, str) else len(text)
    if tokens > limits.max_tokens:
        raise Refusal(413, f"text: {tokens:,} tokens exceeds the limit of {limits.max_tokens:,} tokens "
                           "(see --max-tokens)", reason="too_many_tokens")
    for role, entity in (("head", req.head), ("tail", req.tail)):
        name = entity if isinstance(entity, str) else entity.name
        if name is not None and len(name) > limits.max_text_chars:
            raise Refusal(413, f"{role}: a name of {len(name):,} characters exceeds the limit of "
                               f"{limits.max_text_chars:,} characters (see --max-text-chars)", reason="name_too_long")


def check_pair(pair: PairInput, extractor: RelationExtractor) -> RelationRecord:
    """``pair`` resolved into a record, as the library resolves it (raising its ValueError/TypeError): the head a
    text span, head and tail neither the same span nor crossing (one may hold the other: MNRE relates nested
    mentions), an image-object tail only with an image."""
    return extractor.to_record(pair)
