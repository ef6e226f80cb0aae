"""The service's Prometheus metrics (``GET /metrics``), kept in a registry of each app's own.

Written with prometheus-client, the reference client: its text format, escaping and histogram
buckets are what Prometheus parses, not something to hand-write.

==========================================  =================================================================
``playbook_http_requests_total``            requests answered, by route (the path template, never the URL
                                            as sent: ids and tokens stay out), method and status
``playbook_http_request_duration_seconds``  time from the request to its answer, by route
``playbook_evaluation_duration_seconds``    time to evaluate one case (an event's record state)
``playbook_webhook_events_total``           events by route and outcome status: evaluated, error, coalesced,
                                            duplicate, quarantined, deleted, ignored
``playbook_ingest_queue_depth``             deliveries waiting for the writer thread (read when scraped)
==========================================  =================================================================
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "MetricsMiddleware", "ServiceMetrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# An evaluation takes tens of microseconds to a few milliseconds; a request up to a transaction's commit.
_EVALUATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ServiceMetrics:
    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "playbook_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "playbook_http_request_duration_seconds",
            "Time from a request to its answer, by route template.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.evaluation_seconds = Histogram(
            "playbook_evaluation_duration_seconds",
            "Time to evaluate one case (a record's merged state).",
            buckets=_EVALUATION_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "playbook_webhook_events",
            "Webhook events by route and outcome status (evaluated, duplicate, quarantined, ...).",
            ["route", "status"],
            registry=self.registry,
        )
        depth = Gauge(
            "playbook_ingest_queue_depth", "Deliveries waiting for the writer thread.", registry=self.registry
        )
        depth.set_function(queue_depth)
        # Children looked up once per label set: ``labels()`` takes a lock and builds a key each time.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._event_children: dict[tuple[str, str], Any] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(route, method, str(status)), self.request_seconds.labels(route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_events(self, route: str, statuses: Iterable[str]) -> None:
        for status in statuses:
            child = self._event_children.get((route, status))
            if child is None:
                child = self._event_children[(route, status)] = self.events.labels(route, status)
            child.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request by the route that answered it (pure ASGI: no body buffering).

    ``route_of`` names the route from the scope after routing (Starlette puts the endpoint there);
    a request no route matched is counted under ``unmatched``.
    """

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, route_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.observe_request(self.route_of(scope), scope["method"], status, time.perf_counter() - started)
