"""Dynamic batching (issue 41): concurrent requests share forward passes, and a pair's answer does not depend on
the company it keeps (relation, ranking and scores within 1e-6 of its answer alone); errors stay with their
request; a full queue answers 503 with Retry-After."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from rocmre.inference.extractor import RelationExtractor
from rocmre.service import create_app, serve_in_thread

TEXT = "Barack Obama visited Paris with Michelle Obama"


@pytest.fixture(scope="module")
def image_b64(mnre_root: Path) -> str:
    image = next(p for p in sorted((mnre_root / "img_org" / "test").glob("*.jpg")) if p.stat().st_size < 300_000)
    return base64.b64encode(image.read_bytes()).decode()


@pytest.fixture(scope="module")
def batched(tiny_roc_dir: Path, cache_dir: Path) -> Iterator[tuple[str, Any]]:
    """A server that waits up to 150 ms to fill a pass of up to 16 pairs (so that a burst is grouped)."""
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    app = create_app(extractor, batch_size=16, batch_delay_ms=150)
    with serve_in_thread(app) as url:
        yield url, app.state.service.batcher


def bodies(image_b64: str) -> list[dict[str, Any]]:
    """Pairs of several input shapes, some of the same shape, one with an image, one with a token list."""
    return [
        {"text": TEXT, "head": "Barack Obama", "tail": "Paris", "top_k": 5},
        {"text": TEXT, "head": "Michelle Obama", "tail": "Paris", "top_k": 2},
        {"text": "Angela Merkel met Emmanuel Macron in Berlin", "head": "Angela Merkel", "tail": "Berlin"},
        {"text": "Angela Merkel met Emmanuel Macron in Berlin", "head": "Emmanuel Macron", "tail": "Berlin"},
        {"text": "Lionel Messi plays for Inter Miami", "head": "Lionel Messi", "tail": "Inter Miami", "top_k": 1},
        {"text": TEXT.split(), "head": {"start": 0, "end": 2}, "tail": {"start": 3, "end": 4}, "top_k": 4},
        {"text": TEXT, "head": "Barack Obama", "tail": "Michelle Obama", "image": image_b64, "top_k": 3},
    ]


def burst(url: str, requests: list[dict[str, Any]], path: str = "/predict") -> list[httpx.Response]:
    """All ``requests`` at once, from as many threads."""
    start = threading.Barrier(len(requests))

    def send(body: Any) -> httpx.Response:
        start.wait()
        return httpx.post(url + path, json=body, timeout=120)

    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(send, requests))


def assert_same_answer(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-6) -> None:
    """The same relation, ranking, descriptions and entities; scores within ``tol``."""
    assert {k: v for k, v in a.items() if k not in ("score", "top_k")} == \
        {k: v for k, v in b.items() if k not in ("score", "top_k")}
    assert [(c["relation"], c["description"]) for c in a["top_k"]] == \
        [(c["relation"], c["description"]) for c in b["top_k"]]
    assert a["score"] == pytest.approx(b["score"], abs=tol)
    assert [c["score"] for c in a["top_k"]] == pytest.approx([c["score"] for c in b["top_k"]], abs=tol)


def test_burst_answers_as_alone(batched: tuple[str, Any], image_b64: str) -> None:
    url, batcher = batched
    pairs = bodies(image_b64)
    alone = []
    for body in pairs:
        response = httpx.post(url + "/predict", json=body, timeout=120)
        assert response.status_code == 200, response.text
        alone.append(response.json())
    order = [i for i in range(len(pairs)) for _ in range(3)]
    random.Random(0).shuffle(order)
    passes, answered = batcher.stats.forward_passes, batcher.stats.pairs
    responses = burst(url, [pairs[i] for i in order])
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    for i, response in zip(order, responses, strict=True):
        assert_same_answer(response.json(), alone[i])
        assert len(response.json()["top_k"]) == pairs[i].get("top_k", 3)
    assert batcher.stats.pairs - answered == len(order)
    assert batcher.stats.forward_passes - passes < len(order)  # requests shared passes
    # the same pairs in one /predict/batch call, and in two concurrent ones
    batch = httpx.post(url + "/predict/batch", json=pairs, timeout=120)
    assert batch.status_code == 200, batch.text
    for got, expected in zip(batch.json(), alone, strict=True):
        assert_same_answer(got, expected)
    for response in burst(url, [pairs[:4], pairs[3:]], "/predict/batch"):
        assert response.status_code == 200, response.text


def test_same_shape_requests_share_one_pass(batched: tuple[str, Any]) -> None:
    url, batcher = batched
    body = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
    alone = httpx.post(url + "/predict", json=body, timeout=120).json()
    passes = batcher.stats.forward_passes
    responses = burst(url, [body] * 8)
    assert batcher.stats.forward_passes - passes < 8
    assert max(batcher.stats.sizes[-8:]) > 1
    for response in responses:
        assert_same_answer(response.json(), alone)


def test_errors_stay_with_their_request(batched: tuple[str, Any]) -> None:
    url, _ = batched
    good = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
    missing = {**good, "head": "Angela Merkel"}
    same = {**good, "tail": "Barack Obama"}
    alone = httpx.post(url + "/predict", json=good, timeout=120).json()
    responses = burst(url, [good, missing, good, same, good])
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 422, 200, 422, 200], [r.text for r in responses]
    assert "Angela Merkel" in responses[1].json()["detail"] and "Barack" in responses[1].json()["candidates"]
    assert "same span" in responses[3].json()["detail"]
    for r in (responses[0], responses[2], responses[4]):
        assert_same_answer(r.json(), alone)
    batch = httpx.post(url + "/predict/batch", json=[good, missing], timeout=120)
    assert batch.status_code == 422 and "item 1" in batch.json()["detail"]


def test_full_queue_answers_503(tiny_roc_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    real = extractor.predict_features

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(extractor, "predict_features", slow)
    app = create_app(extractor, max_queue=2, batch_size=1, batch_delay_ms=0)
    body = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
    with serve_in_thread(app) as url:
        responses = burst(url, [body] * 6)
        statuses = sorted(r.status_code for r in responses)
        assert 503 in statuses and 200 in statuses and set(statuses) == {200, 503}, statuses
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "--max-queue" in refused.json()["detail"]
        start = time.perf_counter()
        assert httpx.get(url + "/health", timeout=10).status_code == 200
        assert time.perf_counter() - start < 1.0
        assert app.state.service.batcher.stats.refused == statuses.count(503)
        assert httpx.post(url + "/predict", json=body, timeout=120).status_code == 200


def test_scoring_pads_to_a_multiple_of_eight() -> None:
    from rocmre.modeling.batching import PairCollator, padded_length
    from rocmre.modeling.features import PairFeatures

    assert [padded_length(n, 8) for n in (1, 8, 9, 23)] == [8, 8, 16, 24]
    assert padded_length(23, None) == padded_length(23, 1) == 23
    collator = PairCollator(0, None, 0, 0, use_image=False)
    item = PairFeatures(list(range(1, 11)), head_index=1, tail_index=3, head_type="person", tail_type="location")
    assert collator([item])["input_ids"].shape == (1, 10)
    padded = collator([item], pad_to_multiple_of=8)
    assert padded["input_ids"].shape == (1, 16) and padded["attention_mask"].sum() == 10


def test_worker_takes_several_passes_worth_and_answers_each_request_when_ready(tiny_roc_dir: Path,
                                                                              cache_dir: Path) -> None:
    """Under load the waiting pairs spread over several shapes: the worker takes up to GATHER_PASSES passes' worth
    (not one pass's), so that each shape's pass fills, and a request is answered as soon as its own pairs are
    scored, before the rest of the gather."""
    import asyncio

    from rocmre.inference.extractor import PairInput
    from rocmre.service.batching import GATHER_PASSES, DynamicBatcher, Job

    extractor = RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)
    batcher = DynamicBatcher(extractor, threading.Lock(), batch_size=2, delay_ms=0)
    pairs = [PairInput(TEXT, "Barack Obama", "Paris"), PairInput("Lionel Messi plays for Inter Miami",
                                                                "Lionel Messi", "Inter Miami")]

    async def scenario() -> tuple[list[int], list[tuple[int, int]]]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Job] = asyncio.Queue()
        jobs = [Job([pairs[k % 2]], [1], loop.create_future()) for k in range(3 * GATHER_PASSES * 2)]
        for job in jobs:
            queue.put_nowait(job)
        sizes = [sum(len(j.pairs) for j in await batcher._gather(queue)) for _ in range(3)]
        order: list[tuple[int, int]] = []  # (job, forward passes run when it was answered)
        batcher.run(jobs[:6], lambda j, _: order.append((j, batcher.stats.forward_passes)))
        return sizes, order

    sizes, order = asyncio.run(scenario())
    assert sizes == [GATHER_PASSES * 2] * 3  # not 2 (one pass's worth)
    # six one-pair requests (both sentences pad to the same length): passes of 2, each request answered right
    # after its own pass
    assert sorted(j for j, _ in order) == list(range(6))
    assert [n for _, n in order] == [1, 1, 2, 2, 3, 3]
