"""The DashScope envelope: request ids, success bodies and the one error renderer."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashtune.api.json_body import json_body
from dashtune.api.openai_errors import is_openai_path, openai_error
from dashtune.domain.errors import (
    DashtuneError,
    InternalError,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from dashtune.domain.redaction import hide_paths

__all__ = ["RequestIdMiddleware", "error_response", "install_handlers", "json_body", "ok"]

log = logging.getLogger("dashtune.api")
request_id_var: ContextVar[str] = ContextVar("request_id", default="")


def request_id() -> str:
    return request_id_var.get() or str(uuid.uuid4())


class RequestIdMiddleware:
    """Give every request a fresh UUID, echoed in `X-Request-Id` (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(uuid.uuid4())
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid

        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", []).append((b"x-request-id", rid.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # The catch-all 500: logged with the request_id the caller sees.
            log.exception(
                "unhandled error in %s %s request_id=%s", scope["method"], scope["path"], rid
            )
            if not started:
                response = error_response(
                    InternalError(
                        f"Internal server error; quote request_id {rid} when reporting it."
                    ),
                    scope["path"],
                )
                await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def ok(
    output: Any, key: str = "output", *, fallback: Callable[[], Any] | None = None, **extra: Any
) -> JSONResponse:
    """A success body: `{request_id, output}` (files use key `data`).

    With `fallback`, `output` may hold values that are not strict JSON (views built
    unchecked): when it does not encode, the body is rendered again with `fallback()`'s
    output (the checked views), so a good body costs one encoding."""
    body: dict[str, Any] = {"request_id": request_id(), key: output}
    body.update(extra)
    if fallback is None:
        return JSONResponse(body)
    try:
        return JSONResponse(body)
    except (ValueError, UnicodeEncodeError):
        body[key] = fallback()
        return JSONResponse(body)


def error_headers(exc: DashtuneError) -> dict[str, str]:
    """Retry-After on errors that say when to retry (503 while a model loads)."""
    return {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}


def error_response(exc: DashtuneError, path: str = "", data_dir: Path | str = "") -> JSONResponse:
    """The one error renderer: DashScope's `{request_id, code, message}`, or OpenAI's
    `{error: {...}}` on the OpenAI-compatible routes. Server paths never show."""
    message = hide_paths(exc.message, data_dir)
    if is_openai_path(path):
        body = openai_error(exc.code, message, exc.status, request_id())
    else:
        body = {"request_id": request_id(), "code": exc.code, "message": message}
    return JSONResponse(body, status_code=exc.status, headers=error_headers(exc))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DashtuneError)
    async def _dashtune(request: Request, exc: DashtuneError) -> JSONResponse:
        return error_response(exc, request.url.path, request.app.state.runtime.settings.data_dir)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path")]
        field = ".".join(loc) or "request"
        return error_response(
            InvalidParameter(f"Parameter {field}: {first.get('msg', 'invalid')}."),
            request.url.path,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(
                NotFound(f"No route {request.method} {request.url.path}."), request.url.path
            )
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}."),
                request.url.path,
            )
        err = DashtuneError(str(exc.detail))
        err.status = exc.status_code
        err.code = "InvalidParameter" if exc.status_code < 500 else "InternalError"
        return error_response(err, request.url.path)

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        # The database went away (an outage, a restart, a lock held past the busy
        # timeout): the caller can retry, unlike after a bug, so a 503, not a 500.
        reason = str(exc.orig if exc.orig is not None else exc).strip()
        log.warning(
            "database unavailable in %s %s request_id=%s: %s",
            request.method,
            request.url.path,
            request_id(),
            reason.splitlines()[0] if reason else type(exc).__name__,
        )
        return error_response(
            ServiceUnavailable("The database cannot be reached right now. Retry shortly."),
            request.url.path,
        )
