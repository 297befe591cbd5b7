"""The service's Prometheus metrics (``GET /metrics``, text format): requests and their latency by route, refusals
by status and reason, the batcher's queue depth, forward-pass sizes and times.

Each app has its own :class:`~prometheus_client.CollectorRegistry` (not the process-wide one), so several apps in
one process (tests, notebooks) count apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "MetricsMiddleware", "ServiceMetrics", "refuse_reason"]

#: seconds, for request latency (a request may wait behind a full queue) and forward passes
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: pairs in one forward pass
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: the ``route`` label of a path no route serves (or one refused before routing reached it)
OTHER_ROUTE = "other"


def status_reason(status: int) -> str:
    """The default ``reason`` label of a refusal: the status's phrase in snake case (``payload_too_large``)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return f"status_{status}"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def refuse_reason(scope: Scope, reason: str) -> None:
    """Name why a request is refused (the ``reason`` label of ``rocmre_refusals_total``) where it is refused."""
    scope.setdefault("state", {})["refusal_reason"] = reason


class ServiceMetrics:
    """The metrics of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter("rocmre_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=reg)
        self.latency = Histogram("rocmre_request_duration_seconds", "Time from a request's arrival to its "
                                 "answer, by route.", ["route"], buckets=LATENCY_BUCKETS, registry=reg)
        self.in_progress = Gauge("rocmre_requests_in_progress", "HTTP requests being answered now.", registry=reg)
        self.refusals = Counter("rocmre_refusals", "Requests refused (status >= 400), by status and reason.",
                                ["status", "reason"], registry=reg)
        self.batch_size = Histogram("rocmre_batch_size_pairs", "Pairs in one forward pass of the dynamic batcher.",
                                    buckets=BATCH_BUCKETS, registry=reg)
        self.forward_seconds = Histogram("rocmre_forward_seconds", "Time of one forward pass of the batcher.",
                                         buckets=LATENCY_BUCKETS, registry=reg)
        self.queue_wait = Histogram("rocmre_queue_wait_seconds", "Time a request's pairs waited in the batcher's "
                                    "queue before their forward pass began.", buckets=LATENCY_BUCKETS, registry=reg)

    def watch_queue(self, depth: Callable[[], float], limit: float) -> None:
        """Export the batcher's queue depth (pairs waiting or running; read at scrape time) and its limit."""
        Gauge("rocmre_queue_depth", "Pairs waiting in the batcher's queue or in its running forward pass.",
              registry=self.registry).set_function(depth)
        Gauge("rocmre_queue_limit", "Most pairs the queue holds before requests get 503 (--max-queue).",
              registry=self.registry).set(limit)

    def watch_relations(self, count: Callable[[], float]) -> None:
        Gauge("rocmre_relations", "Relations the model retrieves from.", registry=self.registry).set_function(count)

    def observe_pass(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.forward_seconds.observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Outermost ASGI layer: counts every HTTP request by route (the route's path template, ``static`` for the page's
    files, ``other`` for anything else), method and status, times it, and counts refusals by status and reason (the
    reason a guard or route named with :func:`refuse_reason`, else the status's phrase)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: Callable[[], Iterable[str]],
                 mounts: Iterable[str] = ("/static", "/docs-assets")) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.mounts = tuple(mounts)
        self._known: frozenset[str] | None = None

    def route_of(self, path: str) -> str:
        if self._known is None:
            self._known = frozenset(self.routes())
        if path in self._known:
            return path
        if any(path.startswith(m + "/") for m in self.mounts):
            return "static"
        return OTHER_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # (an exception escaping the app is answered 500 by the server)
        m = self.metrics

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        m.in_progress.inc()
        try:
            await self.app(scope, receive, send_status)
        finally:
            m.in_progress.dec()
            route = self.route_of(scope.get("path", ""))
            m.requests.labels(route, scope.get("method", ""), str(status)).inc()
            m.latency.labels(route).observe(time.perf_counter() - start)
            if status >= 400:
                reason = (scope.get("state") or {}).get("refusal_reason") or status_reason(status)
                m.refusals.labels(str(status), reason).inc()
