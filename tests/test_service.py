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
    assert from_api == from_cli == response.json()
    # single requests match single API calls
    for item, pair in zip(batch, pairs, strict=True):
        single = client.post("/predict", json=item).json()
        assert single == api.predict(pair.text, pair.head, pair.tail, pair.image, 5, pair.head_type).to_dict()


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
