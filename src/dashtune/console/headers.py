"""Security headers for the console: the page keeps an API key in localStorage, so it
must run only its own scripts, never inside another site's frame, and leak no referrer."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/console"
CONSOLE_HEADERS = {
    # uPlot sizes its canvas through inline style attributes; scripts stay 'self' only.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` on every response, the rest on the console's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        console = scope["path"] == PREFIX or scope["path"].startswith(PREFIX + "/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                if console:
                    for name, value in CONSOLE_HEADERS.items():
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)
