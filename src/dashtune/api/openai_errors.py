"""OpenAI's error body, which every error on `/compatible-mode/v1` renders as."""

from __future__ import annotations

from typing import Any

PREFIX = "/compatible-mode/"

ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
    507: "server_error",
}


def is_openai_path(path: str) -> bool:
    """True for the OpenAI-compatible routes (and any unknown path under their prefix)."""
    return path.startswith(PREFIX)


def openai_error(code: str, message: str, status: int, request_id: str) -> dict[str, Any]:
    """OpenAI's error body; `code` keeps the DashScope code so both APIs share one vocabulary."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {
        "error": {"message": message, "type": kind, "code": code, "param": None},
        "request_id": request_id,
    }
