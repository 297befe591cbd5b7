"""The HTTP service on a real uvicorn server (in a thread) with the tiny MNRE-trained models: every route, bad
requests, and the same numbers as the Python API and the CLI."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from rocmre.cli import app as cli_app
from rocmre.inference.extractor import PairInput, RelationExtractor
from rocmre.service import create_app, serve_in_thread

LIMIT = 1_000_000  # bytes
MAX_BATCH = 4
TEXT = "Barack Obama visited Paris with Michelle Obama"
TOKENS = TEXT.split()


@pytest.fixture(scope="module")
def api(tiny_roc_dir: Path, cache_dir: Path) -> RelationExtractor:
    """The Python API, for reference numbers (never mutated)."""
    return RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)


@pytest.fixture(scope="module")
def url(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[str]:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor, max_request_bytes=LIMIT, max_batch_size=MAX_BATCH)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def image_file(mnre_root: Path) -> Path:
    images = sorted((mnre_root / "img_org" / "test").glob("*.jpg"))
    return next(p for p in images if p.stat().st_size < LIMIT // 2)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def assert_error(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["detail"], str)
    for needle in needles:
        assert needle in body["detail"], body
    return body


# -- routes ------------------------------------------------------------------------------------
def test_health(client: httpx.Client, api: RelationExtractor) -> None:
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model_type"] == "roc" and body["relations"] == len(api.relations)


def test_relations(client: httpx.Client, api: RelationExtractor) -> None:
    body = client.get("/relations").json()
    assert body["model_type"] == "roc" and body["negative_label"] == "None"
    assert {r["name"]: r["descriptions"] for r in body["relations"]} == api.describe_relations()
    assert [r["name"] for r in body["relations"]] == api.relations


@pytest.mark.parametrize(("request_body", "call"), [
    ({"text": TEXT, "head": "Barack Obama", "tail": "Paris"}, (TEXT, "Barack Obama", "Paris")),
    ({"text": TEXT, "head": {"char_start": 32, "char_end": 46}, "tail": {"name": "Paris"}, "top_k": 5},
     (TEXT, {"char_start": 32, "char_end": 46}, {"name": "Paris"}, None, 5)),
    ({"text": TOKENS, "head": {"name": "Obama", "start": 6, "end": 7}, "tail": "Barack Obama", "top_k": 2,
      "head_type": "person", "tail_type": "organization"},
     (TOKENS, {"name": "Obama", "start": 6, "end": 7}, "Barack Obama", None, 2, "person", "organization")),
    ({"text": TOKENS, "head": "Barack Obama", "tail": {"name": "man", "box": [0.5, 0.5, 0.4, 0.6]}, "image": "IMG"},
     (TOKENS, "Barack Obama", {"name": "man", "box": [0.5, 0.5, 0.4, 0.6]}, "IMG")),
])
def test_predict_json_matches_api(client: httpx.Client, api: RelationExtractor, image_file: Path,
                                  request_body: dict[str, Any], call: tuple) -> None:
    if request_body.get("image") == "IMG":
        request_body = {**request_body, "image": b64(image_file)}
        call = (*call[:3], image_file, *call[4:])
    response = client.post("/predict", json=request_body)
    assert response.status_code == 200, response.text
    assert response.json() == api.predict(*call).to_dict()


def test_predict_image_as_data_url(client: httpx.Client, api: RelationExtractor, image_file: Path) -> None:
    body = {"text": TEXT, "head": "Barack Obama", "tail": "Paris", "image": "data:image/jpeg;base64," + b64(image_file)}
    got = client.post("/predict", json=body).json()
    assert got["has_image"] is True
    assert got == api.predict(TEXT, "Barack Obama", "Paris", image=image_file.read_bytes()).to_dict()


def test_predict_multipart(client: httpx.Client, api: RelationExtractor, image_file: Path) -> None:
    expected = api.predict(TEXT, "Michelle Obama", "Paris", image=image_file, top_k=4).to_dict()
    files = {"image": ("post.jpg", image_file.read_bytes(), "image/jpeg")}
    request = {"text": TEXT, "head": "Michelle Obama", "tail": "Paris", "top_k": 4}
    response = client.post("/predict", data={"request": json.dumps(request)}, files=files)
    assert response.status_code == 200, response.text
    assert response.json() == expected
    # separate form fields; an entity may be a JSON object
    fields = {"text": TEXT, "head": json.dumps({"char_start": 32, "char_end": 46}), "tail": "Paris", "top_k": "4"}
    response = client.post("/predict", data=fields, files=files)
    assert response.status_code == 200, response.text
    assert response.json() == expected
    # multipart without an image
    response = client.post("/predict", data={**fields, "image": ""}, files={"unused": ("x.txt", b"x")})
    assert response.status_code == 200, response.text
    assert response.json() == api.predict(TEXT, "Michelle Obama", "Paris", top_k=4).to_dict()


def test_batch_api_cli_and_server_agree(client: httpx.Client, api: RelationExtractor, image_file: Path,
                                        tiny_roc_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    """The same inputs through the Python API, the CLI and the server give identical outputs."""
    (tmp_path / "post.jpg").write_bytes(image_file.read_bytes())
    lines = [
        {"text": TEXT, "head": "Barack Obama", "tail": "Paris"},
        {"tokens": TOKENS, "head": {"name": "Michelle Obama", "start": 5, "end": 7},
         "tail": {"name": "Paris", "start": 3, "end": 4}, "image": "post.jpg"},
        {"text": "Tennis star Rafael Nadal gets engaged to Mery Perello", "head": {"char_start": 12, "char_end": 24},
         "tail": "Mery Perello", "head_type": "person"},
    ]
    pairs = [PairInput(li.get("tokens", li.get("text")), li["head"], li["tail"],
                       image_file if "image" in li else None, li.get("head_type")) for li in lines]
    from_api = [p.to_dict() for p in api.predict_batch(pairs, batch_size=32, top_k=5)]

    jsonl = tmp_path / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(li) + "\n" for li in lines), encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    result = CliRunner().invoke(cli_app, ["predict", "--model", str(tiny_roc_dir), "--input", str(jsonl), "--output",
                                          str(out), "--top-k", "5", "--quiet", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    from_cli = [{k: v for k, v in json.loads(x).items() if k != "line"} for x in out.read_text().splitlines()]

    batch = [{"text": li.get("tokens", li.get("text")), "head": li["head"], "tail": li["tail"], "top_k": 5,
              **({"image": b64(image_file)} if "image" in li else {}),
              **({"head_type": li["head_type"]} if "head_type" in li else {})} for li in lines]
    response = client.post("/predict/batch", json=batch)
    assert response.status_code == 200, response.text
    assert from_api == from_cli
    # the server answers each pair as if alone (batch-invariant), as the API's single calls do: the same relation,
    # ranking and descriptions; the scores bit for bit under bf16, within 1e-7 under fp32 (the BLAS may sum in
    # another order for another batch size; this tiny model scores in fp32)
    singles = [api.predict(p.text, p.head, p.tail, p.image, 5, p.head_type).to_dict() for p in pairs]
    for server, single in zip(response.json(), singles, strict=True):
        assert_same_answer(server, single, tol=1e-7)
    for server, library in zip(response.json(), from_api, strict=True):  # the API's padded batch: within 1e-6
        assert_same_answer(server, library)
    for item, single in zip(batch, singles, strict=True):
        assert_same_answer(client.post("/predict", json=item).json(), single, tol=1e-7)


def assert_same_answer(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-6) -> None:
    """The same relation, ranking, descriptions and entities; scores within ``tol``."""
    assert {k: v for k, v in a.items() if k not in ("score", "top_k")} == \
        {k: v for k, v in b.items() if k not in ("score", "top_k")}
    assert [(c["relation"], c["description"]) for c in a["top_k"]] == \
        [(c["relation"], c["description"]) for c in b["top_k"]]
    assert a["score"] == pytest.approx(b["score"], abs=tol)
    assert [c["score"] for c in a["top_k"]] == pytest.approx([c["score"] for c in b["top_k"]], abs=tol)


def test_add_and_remove_relation(client: httpx.Client, api: RelationExtractor) -> None:
    n = len(api.relations)
    name, texts = "/per/org/plays_for", ["The head is an athlete who plays for the tail, a sports team."]
    response = client.post("/relations", json={name: texts})
    assert response.status_code == 200, response.text
    assert response.json() == {"added": [name], "relations": n + 1}
    listed = {r["name"]: r["descriptions"] for r in client.get("/relations").json()["relations"]}
    assert listed[name] == texts
    assert client.get("/health").json()["relations"] == n + 1
    pred = client.post("/predict", json={"text": "Lionel Messi plays for Inter Miami", "head": "Lionel Messi",
                                         "tail": "Inter Miami", "top_k": n + 1}).json()
    candidates = {c["relation"]: c for c in pred["top_k"]}
    assert len(candidates) == n + 1 and candidates[name]["description"] == texts[0]
    # more descriptions for it: nothing new added
    assert client.post("/relations", json={name: ["The head is on the tail's roster."]}).json()["added"] == []
    assert client.delete("/relations", params={"name": name}).json()["relations"] == n
    assert name not in [r["name"] for r in client.get("/relations").json()["relations"]]
    assert_error(client.delete("/relations", params={"name": name}), 404, "unknown relation")
    assert_error(client.delete("/relations", params={"name": "None"}), 400, "negative label")


def test_relation_score_offset_through_the_service(client: httpx.Client) -> None:
    name = "/per/org/plays_for"
    texts = ["The head is an athlete who plays for the tail, a sports team."]
    pair = {"text": "Lionel Messi plays for Inter Miami", "head": "Lionel Messi", "tail": "Inter Miami", "top_k": 50}
    assert client.post("/relations", json={name: {"descriptions": texts}}).status_code == 200
    plain = {c["relation"]: c["score"] for c in client.post("/predict", json=pair).json()["top_k"]}
    client.delete("/relations", params={"name": name})
    assert client.post("/relations", json={name: {"descriptions": texts, "score_offset": -0.5}}).status_code == 200
    try:
        shifted = {c["relation"]: c["score"] for c in client.post("/predict", json=pair).json()["top_k"]}
        assert shifted[name] == pytest.approx(plain[name] - 0.5, abs=1e-5)
        listed = {r["name"] for r in client.get("/relations").json()["relations"]}
        assert name in listed
    finally:
        client.delete("/relations", params={"name": name})
    assert client.post("/relations", json={name: {"descriptions": texts, "none_margin": 0.3}}).status_code == 200
    try:
        gated = {c["relation"]: c["score"] for c in client.post("/predict", json=pair).json()["top_k"]}
        assert gated[name] <= plain[name] + 1e-6  # capped below None where it does not clear the extra margin
    finally:
        client.delete("/relations", params={"name": name})
    assert_error(client.post("/relations", json={"/x/y": {"descriptions": ["d"], "none_margin": "x"}}), 422,
                 "none_margin")
    for bad in ("low", None, 1e9):
        body = {"/x/y": {"descriptions": ["The head y the tail."], "score_offset": bad}}
        if bad is None:
            assert client.post("/relations", json=body).status_code == 200  # null: no offset
            client.delete("/relations", params={"name": "/x/y"})
        else:
            assert_error(client.post("/relations", json=body), 422, "score_offset")


# -- bad requests ------------------------------------------------------------------------------
def test_missing_and_invalid_fields(client: httpx.Client) -> None:
    assert_error(client.post("/predict", json={"text": TEXT, "tail": "Paris"}), 422, "head", "Field required")
    assert_error(client.post("/predict", json={"text": TEXT, "head": "Barack Obama", "tail": "Paris", "top_k": 0}),
                 422, "top_k")
    assert_error(client.post("/predict", json={"text": TEXT, "head": "Barack Obama", "tail": "Paris",
                                               "head_type": "planet"}), 422, "head_type")
    assert_error(client.post("/predict", json={"text": TEXT, "head": "Barack Obama", "tail": "Paris", "colour": 1}),
                 422, "colour")
    assert_error(client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "not valid JSON")
    assert_error(client.post("/predict", json={"text": "   ", "head": "Barack Obama", "tail": "Paris"}), 422)


def test_unknown_and_ambiguous_entities(client: httpx.Client) -> None:
    body = assert_error(client.post("/predict", json={"text": TEXT, "head": "Angela Merkel", "tail": "Paris"}),
                        422, "Angela Merkel", "does not occur")
    assert {"Barack", "Obama", "Paris"} <= set(body["candidates"])
    body = assert_error(client.post("/predict", json={"text": TEXT, "head": "Obama", "tail": "Paris"}), 422,
                        "occurs 2 times")
    assert body["candidates"] == [[1, 2], [6, 7]]
    assert_error(client.post("/predict", json={"text": TEXT, "head": {"char_start": 0, "char_end": 5},
                                               "tail": "Paris"}), 422, "token boundaries")


def test_bad_images(client: httpx.Client) -> None:
    base = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
    assert_error(client.post("/predict", json={**base, "image": "not base64 !!"}), 400, "base64")
    not_an_image = base64.b64encode(b"hello, this is text").decode()
    assert_error(client.post("/predict", json={**base, "image": not_an_image}), 400, "cannot be decoded")
    assert_error(client.post("/predict", data={"request": json.dumps(base)},
                             files={"image": ("x.jpg", b"\xff\xd8 truncated", "image/jpeg")}), 400, "image")
    assert_error(client.post("/predict", data={"request": "{oops"}, files={"image": ("x.jpg", b"x")}), 400,
                 "not valid JSON")


def test_request_size_limit(client: httpx.Client) -> None:
    big = {"text": TEXT, "head": "Barack Obama", "tail": "Paris", "image": "A" * (LIMIT + 10)}
    assert_error(client.post("/predict", json=big), 413, "exceeds the limit", str(LIMIT))

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(LIMIT // 50_000 + 2):
            yield b" " * 50_000

    assert_error(client.post("/predict", content=chunks(), headers={"content-type": "application/json"}), 413,
                 "exceeds the limit")
    # just under the limit is not rejected for size
    ok = client.post("/predict", json={"text": TEXT, "head": "Barack Obama", "tail": "Paris", "image": ""})
    assert ok.status_code == 200


def test_batch_limits_and_item_errors(client: httpx.Client) -> None:
    item = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
    assert_error(client.post("/predict/batch", json=[item] * (MAX_BATCH + 1)), 413, f"limit of {MAX_BATCH}")
    body = assert_error(client.post("/predict/batch", json=[item, {**item, "head": "Angela Merkel"}]), 422,
                        "item 1", "Angela Merkel")
    assert "Barack" in body["candidates"]
    assert_error(client.post("/predict/batch", json=[item, {**item, "image": "@@"}]), 400, "item 1", "base64")
    assert_error(client.post("/predict/batch", json=[item, {"text": TEXT}]), 422, "head")
    assert client.post("/predict/batch", json=[]).json() == []


def test_bad_relation_bodies(client: httpx.Client) -> None:
    assert_error(client.post("/relations", json={}), 422, "at least one relation")
    assert_error(client.post("/relations", json={"/x/y": []}), 422, "non-empty description")
    assert_error(client.post("/relations", json={"/x/y": "one description"}), 422)
    assert_error(client.post("/relations", json=["/x/y"]), 422)


# -- documentation and page --------------------------------------------------------------------
def test_openapi_documents_the_api(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    for name in ("PredictRequest", "PredictResponse", "EntityRef", "RelationsResponse", "HealthResponse",
                 "ErrorResponse", "AddRelationsResponse"):
        assert name in schemas
    assert {"text", "head", "tail", "image", "top_k"} <= set(schemas["PredictRequest"]["properties"])
    assert set(schemas["PredictRequest"]["required"]) == {"text", "head", "tail"}
    predict = spec["paths"]["/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("PredictResponse")
    assert {"400", "413", "422"} <= set(predict["responses"])
    assert {"/predict/batch", "/relations", "/health"} <= set(spec["paths"])
    assert client.get("/docs").status_code == 200


def test_page_and_static_files(client: httpx.Client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "mark as head" in page.text and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_classifier_server(tiny_cls_dir: Path, cache_dir: Path) -> None:
    extractor = RelationExtractor.from_pretrained(tiny_cls_dir, cache_dir=cache_dir)
    with serve_in_thread(create_app(extractor)) as base, httpx.Client(base_url=base, timeout=120) as c:
        health = c.get("/health").json()
        assert health["model_type"] == "classifier" and health["relations"] == len(extractor.relations)
        assert_error(c.post("/relations", json={"/per/org/plays_for": ["The head plays for the tail."]}), 400,
                     "classification model")
        assert c.get("/health").json()["relations"] == len(extractor.relations)
        relations = c.get("/relations").json()
        assert relations["model_type"] == "classifier" and all(not r["descriptions"] for r in relations["relations"])
        pred = c.post("/predict", json={"text": TEXT, "head": "Barack Obama", "tail": "Paris"}).json()
        assert pred["description"] is None
        assert pred == extractor.predict(TEXT, "Barack Obama", "Paris").to_dict()


# -- limits, protection, responsiveness (issue 12) ---------------------------------------------
TOKEN = "test-token"


@pytest.fixture(scope="module")
def limited(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[tuple[httpx.Client, int]]:
    """A server with small limits and an API token; yields a client and the model's relation count."""
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    n = len(extractor.relations)
    app = create_app(extractor, max_text_chars=40, max_tokens=6, max_descriptions=2, max_description_chars=60,
                     max_relations=n + 1, api_token=TOKEN)
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=120) as c:
        yield c, n


def test_configurable_text_limits(limited: tuple[httpx.Client, int]) -> None:
    c, _ = limited
    assert c.post("/predict", json={"text": "Barack Obama visited Paris", "head": "Barack Obama",
                                    "tail": "Paris"}).status_code == 200
    assert_error(c.post("/predict", json={"text": TEXT, "head": "Barack Obama", "tail": "Paris"}), 413,
                 "text: 46 characters exceeds the limit of 40 characters", "--max-text-chars")
    assert_error(c.post("/predict", json={"text": "Obama , Paris , a , b , c", "head": "Obama", "tail": "Paris"}),
                 413, "text: 9 tokens exceeds the limit of 6 tokens", "--max-tokens")
    assert_error(c.post("/predict/batch", json=[{"text": "Obama in Paris", "head": "Obama", "tail": "Paris"},
                                                {"text": TOKENS, "head": "Obama", "tail": "Paris"}]),
                 413, "item 1: text: 46 characters exceeds")


def test_token_protects_relations(limited: tuple[httpx.Client, int]) -> None:
    c, n = limited
    name, texts = "/per/org/plays_for", ["The head plays for the tail."]
    assert_error(c.post("/relations", json={name: texts}), 401, "Authorization: Bearer <token>")
    assert c.post("/relations", json={name: texts}).headers["www-authenticate"] == "Bearer"
    assert_error(c.post("/relations", json={name: texts}, headers={"Authorization": "Bearer nope"}), 401,
                 "wrong API token")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert_error(c.post("/relations", json={name: texts * 3}, headers=auth), 413,
                 "3 descriptions exceeds the limit of 2 per relation")
    assert_error(c.post("/relations", json={name: ["x" * 61]}, headers=auth), 413,
                 "a description of 61 characters exceeds the limit of 60")
    response = c.post("/relations", json={name: texts}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.json() == {"added": [name], "relations": n + 1}
    # one more description would make 3 for this relation; one more relation would make n + 2
    assert_error(c.post("/relations", json={name: ["a", "b"]}, headers=auth), 413,
                 f"relation {name!r}: 3 descriptions exceeds the limit of 2")
    assert_error(c.post("/relations", json={"/per/per/rival": ["The head is the tail's rival."]}, headers=auth),
                 413, f"would make {n + 2}, above the limit of {n + 1}")
    assert_error(c.delete("/relations", params={"name": name}), 401, "API token")
    response = c.delete("/relations", params={"name": name}, headers=auth)
    assert response.status_code == 200 and response.json()["relations"] == n


def test_health_answers_during_slow_work(tiny_roc_dir: Path, cache_dir: Path, image_file: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow prediction (under the model lock) and a slow image decode never block /health."""
    import threading
    import time

    import rocmre.backbones.images as images

    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    real_predict, real_open = extractor.predict_batch, images.open_image

    def slow_predict(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2.0)
        return real_predict(*args, **kwargs)

    def slow_open(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2.0)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(extractor, "predict_batch", slow_predict)
    monkeypatch.setattr(images, "open_image", slow_open)
    body = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
    with serve_in_thread(create_app(extractor)) as base, httpx.Client(base_url=base, timeout=60) as c:
        for request in ({"json": body}, {"json": {**body, "image": b64(image_file)}}):
            results: list[int] = []
            worker = threading.Thread(
                target=lambda r=request, out=results: out.append(c.post("/predict", **r).status_code))
            worker.start()
            time.sleep(0.5)  # the request is now sleeping in the threadpool
            start = time.perf_counter()
            assert c.get("/health").status_code == 200
            assert time.perf_counter() - start < 1.0
            assert worker.is_alive()
            worker.join(timeout=60)
            assert results == [200]


def test_client_disconnect_logs_no_error(url: str) -> None:
    """A client that goes away mid-body or before the answer leaves no ERROR (traceback) in the server log."""
    import logging
    import socket
    import time
    from urllib.parse import urlparse

    records: list[logging.LogRecord] = []
    handler = logging.Handler(level=logging.ERROR)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        where = urlparse(url)
        body = json.dumps({"text": TEXT, "head": "Barack Obama", "tail": "Paris"}).encode()
        head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode()
        for payload in (head + body[:10], head + body):  # mid-body; whole request, gone before the answer
            with socket.create_connection((where.hostname, where.port)) as s:
                s.sendall(payload)
                time.sleep(0.3)
        time.sleep(2.0)
        assert httpx.get(f"{url}/health").status_code == 200
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []


def test_docs_work_offline(client: httpx.Client) -> None:
    """/docs and /redoc load Swagger UI / ReDoc from this server only, and those files are there."""
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        assert "http://" not in html.text and "https://" not in html.text
        urls = re.findall(r'(?:src|href)="([^"]+)"', html.text)
        assert urls and all(u.startswith("/docs-assets/") for u in urls), urls
        for u in urls:
            response = client.get(u)
            assert response.status_code == 200 and len(response.content) > 1000, u
    assert "SwaggerUIBundle" in client.get("/docs").text


def test_cli_serve_options(tiny_roc_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`rocmre serve` hands its limits, protection, batching and connection settings to the app and uvicorn; an
    empty token is refused."""
    import uvicorn
    from fastapi.testclient import TestClient

    served: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    # the loaded model is moved out of the garbage collector's reach before serving (not in this test process)
    monkeypatch.setattr("rocmre.service.running.freeze_loaded_objects", lambda: served.update(frozen=True))
    monkeypatch.setenv("ROCMRE_API_TOKEN", "from-env")
    args = ["serve", "--model", str(tiny_roc_dir), "--cache-dir", str(cache_dir), "--port", "8123",
            "--max-text-chars", "100", "--max-tokens", "20", "--max-descriptions", "3", "--max-description-chars",
            "80", "--max-relations", "30", "--max-image-megapixels", "2", "--max-batch-size", "8",
            "--max-batch-delay-ms", "7.5", "--max-queue", "50", "--timeout-keep-alive", "3", "--limit-concurrency",
            "40", "--header-timeout", "4", "--body-timeout", "6"]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    app = served["app"]
    limits = app.state.limits
    assert (limits.max_text_chars, limits.max_tokens, limits.max_descriptions, limits.max_description_chars,
            limits.max_relations, limits.max_image_pixels) == (100, 20, 3, 80, 30, 2_000_000)
    batcher = app.state.service.batcher
    assert (batcher.batch_size, batcher.delay, batcher.max_queue) == (8, 0.0075, 50)
    assert served["port"] == 8123 and served["timeout_keep_alive"] == 3 and served["limit_concurrency"] == 40
    assert served["frozen"]
    from rocmre.service.running import http_protocol

    assert served["http"].__name__ == "HeaderTimeoutProtocol" and issubclass(served["http"], http_protocol())
    assert {"localhost", "127.0.0.1", "::1"} <= set(app.state.allowed_hosts)
    with TestClient(app, base_url="http://127.0.0.1:8123") as tc:
        assert tc.post("/relations", json={"/x/y": ["The head x the tail."]}).status_code == 401
        assert tc.head("/health").status_code == 200
    with TestClient(app) as tc:  # Host: testserver is not one of the names it answers to
        assert_error(tc.get("/health"), 403, "'testserver' is not served here", "--allowed-hosts")
    result = CliRunner().invoke(cli_app, [*args, "--read-only", "--allowed-hosts", "testserver, example.org"])
    assert result.exit_code == 0 and "read-only" in result.output
    assert served["app"].state.allowed_hosts == ["testserver", "example.org"]
    with TestClient(served["app"]) as tc:
        assert_error(tc.delete("/relations", params={"name": "None"}), 403, "read-only")
    result = CliRunner().invoke(cli_app, [*args, "--allowed-hosts", " , "])
    assert result.exit_code != 0 and "--allowed-hosts is empty" in result.output
    monkeypatch.setenv("ROCMRE_API_TOKEN", " ")
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code != 0 and "--api-token (or ROCMRE_API_TOKEN) is empty" in result.output
