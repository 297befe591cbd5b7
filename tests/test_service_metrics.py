"""GET /metrics: the Prometheus text format, parsed back, counts what the service did (requests and latency by
route, refusals by status and reason, forward-pass sizes, queue depth); each app counts in its own registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from rocmre.inference.extractor import RelationExtractor
from rocmre.service import create_app

TEXT = "Barack Obama visited Paris with Michelle Obama"
GOOD = {"text": TEXT, "head": "Barack Obama", "tail": "Paris"}
BASE = "http://127.0.0.1:8000"


@pytest.fixture(scope="module")
def extractor(tiny_roc_dir: Path, cache_dir: Path) -> RelationExtractor:
    return RelationExtractor.from_pretrained(tiny_roc_dir, cache_dir=cache_dir)


@pytest.fixture()
def client(extractor: RelationExtractor) -> Iterator[TestClient]:
    app = create_app(extractor, max_text_chars=100, max_queue=4, read_only=False)
    with TestClient(app, base_url=BASE) as tc:
        yield tc


def samples(client: TestClient) -> dict[tuple[str, frozenset], float]:
    """Every sample of /metrics as {(name, labels): value}, parsed by prometheus_client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(found: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_refusals_and_batches(client: TestClient) -> None:
    for _ in range(3):
        assert client.post("/predict", json=GOOD).status_code == 200
    assert client.post("/predict/batch", json=[GOOD, {**GOOD, "tail": "Michelle Obama"}]).status_code == 200
    refusals = [
        (client.post("/predict", json={**GOOD, "text": "word " * 40}), 413, "text_too_long"),
        (client.post("/predict", json={**GOOD, "head": "Angela Merkel"}), 422, "entity_not_found"),
        (client.post("/predict", json={**GOOD, "top_k": "x"}), 422, "invalid_request"),
        (client.post("/predict", content=b"{not json", headers={"content-type": "application/json"}), 400,
         "bad_json"),
        (client.post("/relations", content=b'{"/x/y": ["d"]}', headers={"content-type": "text/plain"}), 415,
         "not_json"),
        (client.post("/relations", json={"None\u200b": ["d"]}), 422, "negative_label_name"),
        (client.get("/health", headers={"host": "evil.example"}), 403, "host_not_allowed"),
        (client.post("/relations", json={"/x/y": ["d"]}, headers={"origin": "http://evil.example"}), 403,
         "cross_site"),
        (client.get("/no/such/page"), 404, "not_found"),
    ]
    for response, status, _ in refusals:
        assert response.status_code == status, response.text
    found = samples(client)
    assert value(found, "rocmre_requests_total", route="/predict", method="POST", status="200") == 3
    assert value(found, "rocmre_requests_total", route="/predict/batch", method="POST", status="200") == 1
    assert value(found, "rocmre_requests_total", route="other", method="GET", status="404") == 1
    for _, status, reason in refusals:
        assert value(found, "rocmre_refusals_total", status=str(status), reason=reason) == 1, (status, reason)
    assert sum(v for (name, _), v in found.items() if name == "rocmre_refusals_total") == len(refusals)
    # latency histogram: one observation per request of the route, cumulative buckets ending at +Inf
    assert value(found, "rocmre_request_duration_seconds_count", route="/predict") == 3 + 4
    assert value(found, "rocmre_request_duration_seconds_bucket", route="/predict", le="+Inf") == 7
    assert value(found, "rocmre_request_duration_seconds_sum", route="/predict") > 0
    # the batcher: 5 pairs answered (those refused before or at resolution never reach a pass)
    assert value(found, "rocmre_batch_size_pairs_sum") == 5
    assert 2 <= value(found, "rocmre_batch_size_pairs_count") <= 5
    assert value(found, "rocmre_forward_seconds_count") == value(found, "rocmre_batch_size_pairs_count")
    assert value(found, "rocmre_queue_wait_seconds_count") >= 4
    assert value(found, "rocmre_queue_depth") == 0 and value(found, "rocmre_queue_limit") == 4
    assert value(found, "rocmre_relations") == len(client.app.state.extractor.relations)  # type: ignore[attr-defined]
    assert value(found, "rocmre_requests_in_progress") == 1  # (the scrape itself)


def test_queue_depth_and_full_queue_refusal(client: TestClient) -> None:
    assert client.post("/predict", json=GOOD).status_code == 200  # (starts the batcher)
    batcher = client.app.state.service.batcher  # type: ignore[attr-defined]
    batcher.pending = 4  # as if four pairs were waiting
    try:
        assert value(samples(client), "rocmre_queue_depth") == 4
        refused = client.post("/predict", json=GOOD)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    finally:
        batcher.pending = 0
    assert value(samples(client), "rocmre_refusals_total", status="503", reason="queue_full") == 1


def test_each_app_counts_apart(extractor: RelationExtractor) -> None:
    """Two apps in one process (several registries, none the global one) do not share or clash."""
    first, second = create_app(extractor), create_app(extractor)
    with TestClient(first, base_url=BASE) as a, TestClient(second, base_url=BASE) as b:
        assert a.get("/health").status_code == 200
        assert a.get("/health").status_code == 200
        assert b.get("/health").status_code == 200
        assert value(samples(a), "rocmre_requests_total", route="/health", method="GET", status="200") == 2
        assert value(samples(b), "rocmre_requests_total", route="/health", method="GET", status="200") == 1
    from prometheus_client import REGISTRY

    assert not any(name.startswith("rocmre_") for name in REGISTRY._names_to_collectors)


def test_metrics_documented(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/metrics" in spec["paths"] and "Prometheus" in spec["paths"]["/metrics"]["get"]["description"]
