"""Refuses request URLs that no route could store or log safely, before any route runs.

A control character in the path (`%0A`, `%00`, ...) or a NUL in the query string is a
400 `InvalidParameter`: PostgreSQL rejects NUL in text, and ids never hold either.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from starlette.types import ASGIApp, Receive, Scope, Send

from dashtune.api.envelope import error_response
from dashtune.domain.errors import InvalidParameter

CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UrlGuardMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = url_problem(scope["path"], scope.get("query_string", b""))
            if problem:
                await error_response(InvalidParameter(problem), scope["path"])(scope, receive, send)
                return
        await self.app(scope, receive, send)


def url_problem(path: str, query: bytes) -> str | None:
    """Why this URL is refused, or None."""
    if CONTROL.search(path):
        return "The request path contains a control character."
    if b"\x00" in unquote_to_bytes(query.replace(b"+", b" ")):
        return "The query string contains a NUL character."
    return None
