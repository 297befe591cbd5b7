"""The holes a hostile client found in the service (issue 41), each closed: a linear JSON-depth check, lone
surrogates refused at the boundary with nothing half-added, /predict/batch counted before validated, Host/Origin
checks, connection timeouts and caps, and an image-format allowlist. (Single bad requests are cases of the corpus
in tests/bad_inputs/http.json.)"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from rocmre.inference.extractor import RelationExtractor
from rocmre.service import create_app, serve_in_thread
from rocmre.service.guards import default_allowed_hosts, host_name
from rocmre.service.limits import json_too_deep

TEXT = "Barack Obama visited Paris with Michelle Obama"
PAIR = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}


@pytest.fixture(scope="module")
def server(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[tuple[str, RelationExtractor]]:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    app = create_app(extractor, body_timeout=0.5)
    with serve_in_thread(app, header_timeout=0.5, limit_concurrency=20) as url:
        yield url, extractor


def names(url: str) -> list[str]:
    response = httpx.get(f"{url}/relations", timeout=60)
    assert response.status_code == 200, response.text
    return [r["name"] for r in response.json()["relations"]]


# -- 1. the JSON nesting check is linear -------------------------------------------------------
def test_json_depth_check_is_linear() -> None:
    body = b"[" * 40 + b'"' + b'\\"' * 36_000  # froze the server for 15 s with the old regex
    start = time.perf_counter()
    assert json_too_deep(body)
    assert time.perf_counter() - start < 0.5
    start = time.perf_counter()
    assert json_too_deep(b"[" * 40 + b'"' + b'\\"' * 3_600_000)  # 100 times as long: still well under a second
    assert time.perf_counter() - start < 3.0
    assert not json_too_deep(b'[[["a\\"]]]]]]", "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]]]')
    assert json_too_deep(b"[" * 33 + b"]" * 33) and not json_too_deep(b"[" * 32 + b"]" * 32)


def test_escaped_quotes_answered_fast_and_health_unblocked(server: tuple[str, RelationExtractor]) -> None:
    url, _ = server
    start = time.perf_counter()
    response = httpx.post(f"{url}/predict", content=b"[" * 40 + b'"' + b'\\"' * 36_000,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 400 and "levels deep" in response.json()["detail"]
    assert time.perf_counter() - start < 2.0
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200


# -- 2. lone surrogates: refused, nothing half-added -------------------------------------------
def test_surrogate_in_one_relation_adds_none(server: tuple[str, RelationExtractor]) -> None:
    url, _ = server
    before = names(url)
    body = '{"/per/org/good": ["The head works for the tail."], "/per/org/bad": ["The \\udc80 head."]}'
    response = httpx.post(f"{url}/relations", content=body, headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code == 422 and "lone surrogate" in response.json()["detail"]
    assert names(url) == before
    assert httpx.post(f"{url}/predict", json=PAIR, timeout=60).status_code == 200


def test_relation_set_that_cannot_be_encoded_is_rolled_back(server: tuple[str, RelationExtractor],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    url, extractor = server
    before = names(url)

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise TypeError("cannot encode this description")

    monkeypatch.setattr(extractor.model, "description_vectors", fail)
    response = httpx.post(f"{url}/relations", json={"/per/org/new": ["The head x the tail."]}, timeout=60)
    assert response.status_code == 422, response.text
    assert "cannot be encoded" in response.json()["detail"] and "nothing was added" in response.json()["detail"]
    monkeypatch.undo()
    assert names(url) == before
    pred = httpx.post(f"{url}/predict", json={**PAIR, "top_k": len(before)}, timeout=60)
    assert pred.status_code == 200 and "/per/org/new" not in {c["relation"] for c in pred.json()["top_k"]}


# -- 3. /predict/batch counts before validating ------------------------------------------------
def test_huge_batch_refused_before_validation(server: tuple[str, RelationExtractor]) -> None:
    url, _ = server
    start = time.perf_counter()
    response = httpx.post(f"{url}/predict/batch", content=b"[" + b"{}," * 600_000 + b"{}]",
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 413 and "600001 items" in response.json()["detail"]
    assert time.perf_counter() - start < 5.0
    response = httpx.post(f"{url}/predict/batch", json=[PAIR, {"text": TEXT}], timeout=60)  # within the limit
    assert response.status_code == 422 and "1.head: Field required" in response.json()["detail"]


# -- 5. Host and Origin ------------------------------------------------------------------------
def test_host_names_parsed() -> None:
    assert host_name("[::1]:8000") == "::1"
    assert host_name("Example.COM.:80") == "example.com"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert {"localhost", "127.0.0.1", "::1", "10.1.2.3"} <= set(default_allowed_hosts("10.1.2.3"))
    assert set(default_allowed_hosts("127.0.0.1")) == {"localhost", "127.0.0.1", "::1"}
    assert socket.gethostname().lower() in default_allowed_hosts("0.0.0.0")


def test_page_origin_and_localhost_accepted(server: tuple[str, RelationExtractor]) -> None:
    url, _ = server
    port = urlparse(url).port
    with httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health", headers={"host": f"localhost:{port}"}).status_code == 200
        response = c.post("/relations", json={"/x/y": ["The head x the tail."]}, headers={"origin": url})
        assert response.status_code == 200, response.text  # the web page at / posts with its own origin
        assert c.delete("/relations", params={"name": "/x/y"}, headers={"origin": url}).status_code == 200
        assert c.post("/predict", json=PAIR, headers={"origin": "https://evil.example"}).status_code == 403


def test_any_host_still_refuses_cross_site_changes(tiny_roc_dir: Path, cache_dir: Path) -> None:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor, allowed_hosts=["*"])) as url, \
            httpx.Client(base_url=url, timeout=60) as c:
        assert c.get("/health", headers={"host": "anything.example"}).status_code == 200
        evil = c.post("/relations", json={"/x/y": ["d"]}, headers={"origin": "http://evil.example"})
        assert evil.status_code == 403 and "cross-site" in evil.json()["detail"]


# -- 6. timeouts and the connection cap --------------------------------------------------------
def test_half_sent_headers_lose_the_connection(server: tuple[str, RelationExtractor]) -> None:
    where = urlparse(server[0])
    with socket.create_connection((where.hostname, where.port), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        start = time.perf_counter()
        assert s.recv(1024) == b""  # closed by the server
        assert time.perf_counter() - start < 5.0
    with socket.create_connection((where.hostname, where.port), timeout=10) as s:  # an idle connection too
        start = time.perf_counter()
        assert s.recv(1024) == b""
        assert time.perf_counter() - start < 5.0


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends before it closes: headers and body may come as separate segments."""
    chunks = []
    while chunk := s.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_body_gets_408(server: tuple[str, RelationExtractor]) -> None:
    where = urlparse(server[0])
    with socket.create_connection((where.hostname, where.port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"text\": ")
        answer = read_until_closed(s)
    assert answer.startswith(b"HTTP/1.1 408") and b"--body-timeout" in answer


def test_connection_cap_answers_503(tiny_roc_dir: Path, cache_dir: Path) -> None:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor), limit_concurrency=2) as url:
        where = urlparse(url)
        with socket.create_connection((where.hostname, where.port)), \
                socket.create_connection((where.hostname, where.port)):
            time.sleep(0.2)
            assert httpx.get(f"{url}/health", timeout=10).status_code == 503
        time.sleep(0.2)
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200


# -- 7. image formats --------------------------------------------------------------------------
def image_bytes(fmt: str) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


@pytest.mark.parametrize(("fmt", "status"), [("PNG", 200), ("JPEG", 200), ("GIF", 200), ("BMP", 200),
                                             ("WEBP", 200), ("TIFF", 400), ("PPM", 400), ("ICO", 400)])
def test_only_listed_image_formats_decoded(server: tuple[str, RelationExtractor], fmt: str, status: int) -> None:
    url, _ = server
    response = httpx.post(f"{url}/predict", data={"text": TEXT, "head": "Barack Obama", "tail": "Paris"},
                          files={"image": (f"x.{fmt.lower()}", image_bytes(fmt))}, timeout=120)
    assert response.status_code == status, response.text
    if status == 400:
        assert "send a JPEG, PNG, GIF, BMP or WebP file" in response.json()["detail"]
