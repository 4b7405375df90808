"""Reading a JSON request body: bounded in bytes while it streams in, then in depth and content.

Limits (settings): `DASHTUNE_MAX_BODY_BYTES` (413 `RequestTooLarge`, counted as the body
arrives, Content-Length or chunked) and `DASHTUNE_MAX_JSON_DEPTH` (400). The parsed body
is strict JSON (no NaN/Infinity), and every string and number in it is storable
(`domain.json_values`), so no route stores or echoes what it could not render.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from dashtune.domain.errors import InvalidParameter, RequestTooLarge, UnsupportedMediaType
from dashtune.domain.json_values import check_json_value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def declared_length(request: Request) -> int | None:
    """The Content-Length header as an int, or None when absent or not a number."""
    length = request.headers.get("content-length", "")
    return int(length) if length.isdigit() and len(length) < 20 else None


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as more than `limit` bytes were declared or received."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise RequestTooLarge(f"The request body is {length} bytes; the limit is {limit} bytes.")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"The request body is over the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes | str, where: str, max_depth: int) -> Any:
    """Strict JSON with every value storable, or 400 InvalidParameter saying what is wrong."""
    try:
        value = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise InvalidParameter(f"{where} is nested more than {max_depth} levels deep.") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, NaN, 4300+ digits
        raise InvalidParameter(f"{where} is not valid JSON: {exc}.") from None
    check_json_value(value, where, max_depth)
    return value


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or the right 400/413/415 saying what is wrong."""
    settings = request.app.state.runtime.settings
    ctype = request.headers.get("content-type", "")
    raw = await read_limited(request, settings.max_body_bytes)
    if raw and ctype and "json" not in ctype.lower():
        raise UnsupportedMediaType(
            f"Content-Type '{ctype}' is not supported here; send application/json."
        )
    if not raw.strip():
        return {}
    body = parse_json(raw, "The request body", settings.max_json_depth)
    if not isinstance(body, dict):
        raise InvalidParameter("The request body must be a JSON object.")
    return body
