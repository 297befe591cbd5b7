"""The committed HTTP bad-input corpus (tests/bad_inputs/http.json) against real servers: each case gets its exact
status code and a message that says what went wrong, never a 500.

A case has ``id``, ``method``, ``path``, ``status`` and ``detail`` (a fragment of the answer's ``detail``; null for
a success without a body) and at most one body: ``json``; ``raw_parts`` (``[[piece, times], ...]`` concatenated, for
large or deeply nested bodies); ``raw_latin1`` (a string sent as its latin-1 bytes); ``multipart`` (form fields)
with optional ``files`` (``{field: [filename, latin-1 content]}``). ``png_header: [w, h]`` adds a base64 PNG whose
header claims that size to the JSON body as ``image``. Optional: ``headers``, ``absent`` (a fragment the answer must
not contain) and ``server``: ``default``, ``token`` (``--api-token``) or ``read_only``."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from rocmre.inference.extractor import RelationExtractor
from rocmre.service import create_app, serve_in_thread

CORPUS = Path(__file__).resolve().parent / "bad_inputs" / "http.json"
CASES: list[dict[str, Any]] = json.loads(CORPUS.read_text(encoding="utf-8"))
TOKEN = "s3cret-token"


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height``, with the first bytes of its pixel data only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(1024)))


@pytest.fixture(scope="module")
def servers(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[dict[str, str]]:
    """Three servers on one model: open, token-protected and read-only (no case may change the model)."""
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor)) as default, \
            serve_in_thread(create_app(extractor, api_token=TOKEN)) as token, \
            serve_in_thread(create_app(extractor, read_only=True)) as read_only:
        yield {"default": default, "token": token, "read_only": read_only}


def request_args(case: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {"headers": case.get("headers", {})}
    if "json" in case:
        body = case["json"]
        if "png_header" in case:
            body = {**body, "image": base64.b64encode(png_header(*case["png_header"])).decode()}
        args["json"] = body
    elif "raw_parts" in case:
        args["content"] = "".join(piece * times for piece, times in case["raw_parts"]).encode()
    elif "raw_latin1" in case:
        args["content"] = case["raw_latin1"].encode("latin-1")
    elif "multipart" in case:
        args["data"] = case["multipart"]
        files = {k: (name, content.encode("latin-1")) for k, (name, content) in case.get("files", {}).items()}
        args["files"] = files or {"unused": ("unused.txt", b"x")}
    return args


def test_corpus_is_large_and_well_formed() -> None:
    assert len(CASES) >= 20
    assert len({c["id"] for c in CASES}) == len(CASES)
    for case in CASES:
        assert {"id", "method", "path", "status", "detail"} <= set(case), case
        assert case.get("server", "default") in ("default", "token", "read_only"), case


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input(servers: dict[str, str], case: dict[str, Any]) -> None:
    with httpx.Client(base_url=servers[case.get("server", "default")], timeout=60) as client:
        response = client.request(case["method"], case["path"], **request_args(case))
    assert response.status_code == case["status"], response.text
    if case["detail"] is None:
        return
    detail = response.json()["detail"]
    assert isinstance(detail, str) and case["detail"] in detail, detail
    if "absent" in case:
        assert case["absent"] not in response.text


def test_corpus_left_the_server_whole(servers: dict[str, str], tiny_roc_dir: Path, cache_dir: Path) -> None:
    """After every case (lone surrogates in names and descriptions among them), the relation set is the model's
    own, listed, and usable: nothing half-added stays."""
    expected = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir).relations
    for url in servers.values():
        with httpx.Client(base_url=url, timeout=60) as client:
            listed = client.get("/relations")
            assert listed.status_code == 200, listed.text
            assert [r["name"] for r in listed.json()["relations"]] == expected
            pred = client.post("/predict", json={"text": "Barack Obama visited Paris", "head": "Barack Obama",
                                                 "tail": "Paris", "top_k": len(expected)})
            assert pred.status_code == 200, pred.text
