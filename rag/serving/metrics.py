"""Prometheus metrics of one server: requests, errors, latency, tokens, requests in flight.

Each app has its own registry, so several apps in one process (tests) do not share counters and
vLLM's own metrics in the default registry stay separate.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("rag_requests", "HTTP requests by path and status",
                                ["path", "status"], registry=self.registry)
        self.errors = Counter("rag_errors", "responses with status >= 400, by path",
                              ["path"], registry=self.registry)
        self.latency = Histogram("rag_request_seconds", "time to the response head, by path",
                                 ["path"], registry=self.registry)
        self.token_count = Counter("rag_tokens", "tokens processed, by kind", ["kind"],
                                   registry=self.registry)
        self.in_flight = Gauge("rag_requests_in_flight", "requests being served",
                               registry=self.registry)

    def tokens(self, prompt: int, completion: int) -> None:
        self.token_count.labels("prompt").inc(prompt)
        self.token_count.labels("completion").inc(completion)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        path = request.url.path if request.url.path.startswith("/v1/") else "other"
        began = time.perf_counter()
        self.in_flight.inc()
        try:
            response = await call_next(request)
        finally:
            self.in_flight.dec()
        self.latency.labels(path).observe(time.perf_counter() - began)
        self.requests.labels(path, str(response.status_code)).inc()
        if response.status_code >= 400:
            self.errors.labels(path).inc()
        return response

    def render(self) -> bytes:
        return generate_latest(self.registry)
