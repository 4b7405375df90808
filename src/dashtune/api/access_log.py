"""Observes each request once: a log line (method, route template, path, status,
duration, request_id) and the Prometheus request counter and timer of `api.metrics`.

With `DASHTUNE_LOG_JSON=true` the fields travel as JSON keys (see `logging_setup`);
otherwise they read as one text line. The request_id is the one the caller got in
`X-Request-Id`, so a user's bug report leads straight to the server's line.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashtune.api.metrics import method_label, route_template, status_label

log = logging.getLogger("dashtune.access")
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """`text` with control characters as `\\xNN` escapes: a request cannot forge log lines."""
    return UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode(), text)


class AccessLog:
    """The one observer of requests: what `AccessLogMiddleware` and `fast_reads` record."""

    def __init__(self, requests: Counter, seconds: Histogram) -> None:
        self.requests = requests
        self.seconds = seconds
        # The labelled children, looked up once per label set: `labels()` validates and
        # locks on every call. Bounded, as the labels are (see api.metrics).
        self.counters: dict[tuple[str, str, str], Any] = {}
        self.timers: dict[tuple[str, str], Any] = {}

    def record(
        self, method: str, route: str, path: str, status: int, elapsed: float, request_id: str
    ) -> None:
        """Count and time the request, and write its log line (`path`: the raw one)."""
        method = method_label(method)
        key = (method, route, status_label(status))
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = self.requests.labels(*key)
        counter.inc()
        timer = self.timers.get(key[:2])
        if timer is None:
            timer = self.timers[(method, route)] = self.seconds.labels(method, route)
        timer.observe(elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        ms = elapsed * 1000
        path = printable(path)
        log.info(
            "%s %s %s %.1fms request_id=%s",
            method,
            path,
            status,
            ms,
            request_id,
            extra={
                "method": method,
                "route": route,
                "path": path,
                "status": status,
                "duration_ms": round(ms, 2),
                "request_id": request_id,
            },
        )


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, access: AccessLog) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500
        request_id = ""

        async def observe(message: Message) -> None:
            nonlocal status, request_id
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", []):
                    if name.lower() == b"x-request-id":
                        request_id = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            self.access.record(
                scope["method"],
                route_template(scope, root_path),
                scope["path"],
                status,
                time.perf_counter() - started,
                request_id,
            )
