"""The DashScope envelope: request ids, success bodies and the one error renderer."""

from __future__ import annotations

import json
import logging
import uuid
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dashtune.domain.errors import (
    DashtuneError,
    InternalError,
    InvalidParameter,
    MethodNotAllowed,
    NotFound,
    UnsupportedMediaType,
)

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
                    )
                )
                await response(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def ok(output: Any, key: str = "output", **extra: Any) -> JSONResponse:
    """A success body: `{request_id, output}` (files use key `data`)."""
    body: dict[str, Any] = {"request_id": request_id(), key: output}
    body.update(extra)
    return JSONResponse(body)


def error_response(exc: DashtuneError) -> JSONResponse:
    return JSONResponse(
        {"request_id": request_id(), "code": exc.code, "message": exc.message},
        status_code=exc.status,
    )


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or the right 400/415 saying what is wrong."""
    raw = await request.body()
    ctype = request.headers.get("content-type", "")
    if raw and ctype and "json" not in ctype.lower():
        raise UnsupportedMediaType(
            f"Content-Type '{ctype}' is not supported here; send application/json."
        )
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidParameter("The request body must be a JSON object.")
    return body


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DashtuneError)
    async def _dashtune(_: Request, exc: DashtuneError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path")]
        field = ".".join(loc) or "request"
        return error_response(
            InvalidParameter(f"Parameter {field}: {first.get('msg', 'invalid')}.")
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound(f"No route {request.method} {request.url.path}."))
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
            )
        err = DashtuneError(str(exc.detail))
        err.status = exc.status_code
        err.code = "InvalidParameter" if exc.status_code < 500 else "InternalError"
        return error_response(err)
