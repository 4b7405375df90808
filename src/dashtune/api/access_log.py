"""Observes each request once: a log line (method, route template, path, status,
duration, request_id) and the Prometheus request counter and timer of `api.metrics`.

With `DASHTUNE_LOG_JSON=true` the fields travel as JSON keys (see `logging_setup`);
otherwise they read as one text line. The request_id is the one the caller got in
`X-Request-Id`, so a user's bug report leads straight to the server's line.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashtune.api.metrics import route_template

log = logging.getLogger("dashtune.access")


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, requests: Counter, seconds: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.seconds = seconds

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
            elapsed = time.perf_counter() - started
            ms = elapsed * 1000
            route = route_template(scope, root_path)
            self.requests.labels(scope["method"], route, str(status)).inc()
            self.seconds.labels(scope["method"], route).observe(elapsed)
            log.info(
                "%s %s %s %.1fms request_id=%s",
                scope["method"],
                scope["path"],
                status,
                ms,
                request_id,
                extra={
                    "method": scope["method"],
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(ms, 2),
                    "request_id": request_id,
                },
            )
