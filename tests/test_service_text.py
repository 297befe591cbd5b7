"""The service and the library agree on what a pair is: nested spans accepted, crossing ones refused with an
accurate message; character offsets count code points (the web page converts its UTF-16 selection); text is
compared and scored under NFC with the user's characters kept; look-alikes of the negative label refused; the API
docs load nothing from another host; uploads are decoded only as the listed formats."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rocmre.inference.extractor import RelationExtractor
from rocmre.service import create_app
from rocmre.service.routes import STATIC_DIR
from rocmre.service.text import label_key

BASE = "http://127.0.0.1:8000"
TEXT = "Barack Obama visited Paris with Michelle Obama"
NFC_TEXT = "Zoë Saldaña visited Paris with José Mourinho"
NFD_TEXT = unicodedata.normalize("NFD", NFC_TEXT)


@pytest.fixture(scope="module")
def client(extractor: RelationExtractor) -> Iterator[TestClient]:
    with TestClient(create_app(extractor), base_url=BASE) as tc:
        yield tc


def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def scores(answer: dict[str, Any]) -> list[tuple[str, float]]:
    return [(c["relation"], c["score"]) for c in answer["top_k"]]


# -- spans -------------------------------------------------------------------------------------
def test_nested_spans_accepted_as_the_library_does(client: TestClient, extractor: RelationExtractor) -> None:
    body = {"text": TEXT, "head": "Barack Obama", "tail": {"char_start": 7, "char_end": 12}, "top_k": 5}
    got = ok(client.post("/predict", json=body))
    expected = extractor.predict(TEXT, "Barack Obama", (7, 12), top_k=5)
    assert (got["head"]["start"], got["head"]["end"], got["tail"]["start"], got["tail"]["end"]) == (0, 2, 1, 2)
    assert [r for r, _ in scores(got)] == [c.relation for c in expected.top_k]
    assert [s for _, s in scores(got)] == pytest.approx([c.score for c in expected.top_k], abs=1e-6)
    inner = ok(client.post("/predict", json={**body, "head": {"char_start": 7, "char_end": 12},
                                             "tail": "Barack Obama"}))
    assert inner["head"]["name"] == "Obama"


def test_crossing_spans_refused_with_an_accurate_message(client: TestClient) -> None:
    crossing = client.post("/predict", json={"text": TEXT, "head": "Barack Obama",
                                             "tail": {"char_start": 7, "char_end": 20}})
    assert crossing.status_code == 422
    assert "partly overlap; spans may nest but not cross" in crossing.json()["detail"]
    batch = client.post("/predict/batch", json=[{"text": TEXT, "head": "Barack Obama", "tail": "Paris"},
                                                {"text": TEXT, "head": "Barack Obama",
                                                 "tail": {"char_start": 7, "char_end": 20}}])
    assert batch.status_code == 422 and "item 1: " in batch.json()["detail"]


# -- code points -------------------------------------------------------------------------------
def test_offsets_after_an_emoji_count_code_points(client: TestClient) -> None:
    text = "\U0001f600 Barack Obama visited Paris"
    start = text.index("Barack")  # 2 code points in; 3 UTF-16 units
    got = ok(client.post("/predict", json={"text": text, "head": {"char_start": start, "char_end": start + 12},
                                           "tail": "Paris"}))
    assert got["head"]["name"] == "Barack Obama"
    utf16 = client.post("/predict", json={"text": text, "head": {"char_start": start + 1, "char_end": start + 13},
                                          "tail": "Paris"})
    assert utf16.status_code == 422 and "token boundaries" in utf16.json()["detail"]


def test_page_converts_selection_offsets_to_code_points() -> None:
    """The page's conversion, run in Node on strings with characters outside the BMP."""
    source = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    match = re.search(r"^function codePointIndex\(.*?^}\n", source, re.S | re.M)
    assert match, "app.js lost codePointIndex"
    assert "char_start: codePointIndex(" in source and "char_end: codePointIndex(" in source
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js to run the page's code")
    cases = [("\U0001f600 Barack", 3), ("\U0001f600\U0001f600ab", 5), ("plain", 4), ("Zoë", 3)]
    script = match.group(0) + f"console.log(JSON.stringify({json.dumps(cases)}.map(([t, i]) => codePointIndex(t, i))))"
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out) == [2, 3, 4, 3]


# -- normalisation -----------------------------------------------------------------------------
def test_nfc_and_nfd_score_the_same_and_names_match_across_forms(client: TestClient) -> None:
    assert NFC_TEXT != NFD_TEXT
    nfc_name, nfd_name = "Zoë Saldaña", unicodedata.normalize("NFD", "Zoë Saldaña")
    body = {"head": nfc_name, "tail": "Paris", "top_k": 5}
    composed = ok(client.post("/predict", json={**body, "text": NFC_TEXT}))
    decomposed = ok(client.post("/predict", json={**body, "text": NFD_TEXT}))  # an NFC name in an NFD text
    assert scores(decomposed) == scores(composed)
    assert {k: decomposed["head"][k] for k in ("start", "end")} == {k: composed["head"][k] for k in ("start", "end")}
    mixed = ok(client.post("/predict", json={**body, "text": NFC_TEXT, "head": nfd_name}))
    assert scores(mixed) == scores(composed)
    assert mixed["head"]["name"] == nfd_name  # the user's characters, as sent
    # character offsets count the text as sent (NFD: longer) and are moved to the NFC text
    start, end = NFD_TEXT.index(nfd_name), NFD_TEXT.index(nfd_name) + len(nfd_name)
    offsets = ok(client.post("/predict", json={**body, "text": NFD_TEXT,
                                               "head": {"char_start": start, "char_end": end}}))
    assert scores(offsets) == scores(composed) and offsets["head"]["name"] == nfd_name
    batch = ok(client.post("/predict/batch", json=[{**body, "text": NFD_TEXT, "head": nfd_name}]))
    assert scores(batch[0]) == scores(composed) and batch[0]["head"]["name"] == nfd_name
    split = client.post("/predict", json={**body, "text": NFD_TEXT, "head": {"char_start": 0, "char_end": 3}})
    assert split.status_code == 422 and "head.char_end: character 3" in split.json()["detail"]


def test_token_lists_and_descriptions_normalised(client: TestClient, extractor: RelationExtractor) -> None:
    tokens = NFD_TEXT.split()
    got = ok(client.post("/predict", json={"text": tokens, "head": {"start": 0, "end": 2}, "tail": "Paris",
                                           "top_k": 5}))
    ref = ok(client.post("/predict", json={"text": NFC_TEXT.split(), "head": {"start": 0, "end": 2},
                                           "tail": "Paris", "top_k": 5}))
    assert scores(got) == scores(ref) and got["head"]["name"] == " ".join(tokens[:2])
    name = "/per/per/coached_by"
    description = unicodedata.normalize("NFD", "{head} is coached by {tail}, an entraîneur.")
    added = client.post("/relations", json={name: {"descriptions": [description], "examples": [
        {"text": NFD_TEXT, "head": "Zoë Saldaña", "tail": "José Mourinho"}]}})
    try:
        assert added.status_code == 200, added.text
        listed = {r["name"]: r for r in ok(client.get("/relations"))["relations"]}
        assert listed[name]["descriptions"] == [unicodedata.normalize("NFC", description)]
        assert listed[name]["examples"] == 1
    finally:
        assert client.delete("/relations", params={"name": name}).status_code == 200


def test_look_alikes_of_the_negative_label_refused(client: TestClient) -> None:
    for name in ("None\u200b", "\uff2e\uff4f\uff4e\uff45", " NONE ", "\u2060n\u00adone", "\u202eNone"):
        assert label_key(name) == label_key("None"), name
        response = client.post("/relations", json={name: ["Nothing holds."]})
        assert response.status_code == 422 and "is the negative label" in response.json()["detail"], name
    assert label_key("Nonesuch") != label_key("None")


# -- docs and images ---------------------------------------------------------------------------
def test_redoc_loads_nothing_remote(client: TestClient) -> None:
    page = client.get("/redoc")
    assert page.status_code == 200 and "https://" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "default-src 'self'" in client.get("/docs").headers["content-security-policy"]
    bundle = client.get("/docs-assets/redoc.standalone.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert b"cdn.redoc.ly" not in bundle.content and b"/static/docs-logo.svg" in bundle.content
    logo = client.get("/static/docs-logo.svg")
    assert logo.status_code == 200 and logo.text.startswith("<svg")


def test_full_decode_restricted_to_the_listed_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    from rocmre.backbones import images
    from rocmre.backbones.images import ImageLoadError, open_image
    from rocmre.service.limits import IMAGE_FORMATS, check_image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="TIFF")
    tiff = buffer.getvalue()
    assert open_image(tiff).size == (8, 8)  # the library decodes any format by default
    with pytest.raises(ImageLoadError):
        open_image(tiff, formats=("JPEG", "PNG"))
    calls: list[Any] = []
    real_open = Image.open

    def spy(fp: Any, mode: str = "r", formats: Any = None) -> Image.Image:
        calls.append(formats)
        return real_open(fp, mode, formats)

    monkeypatch.setattr(images.Image, "open", spy)
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    assert check_image(buffer.getvalue()) == buffer.getvalue()
    assert len(calls) == 2 and all(tuple(f) == IMAGE_FORMATS for f in calls)  # the probe and the full decode


def test_unicode_module_needs_no_model() -> None:
    """The offset move on its own: a composed character counts once."""
    from rocmre.service.text import nfc_offset

    text = unicodedata.normalize("NFD", "é x")
    assert nfc_offset(text, 3, "head", "char_start") == 2
    assert Path(STATIC_DIR / "docs-logo.svg").is_file()
