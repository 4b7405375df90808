"""Errors as types: each carries the DashScope code and HTTP status it renders as.

Services raise these; one exception handler in `api` turns them into the envelope
`{request_id, code, message}`. Nothing else decides status codes.
"""

from __future__ import annotations


class DashtuneError(Exception):
    """Base of every error a caller may see; `code` and `status` follow §1 of the contract."""

    code = "InternalError"
    status = 500
    retry_after: int | None = None  # seconds, sent as Retry-After when set

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(DashtuneError):
    code = "InvalidParameter"
    status = 400


class UnsupportedOperation(DashtuneError):
    code = "UnsupportedOperation"
    status = 400


class InvalidApiKey(DashtuneError):
    code = "InvalidApiKey"
    status = 401


class AccessDenied(DashtuneError):
    code = "AccessDenied"
    status = 403


class NotFound(DashtuneError):
    code = "NotFound"
    status = 404


class MethodNotAllowed(DashtuneError):
    code = "MethodNotAllowed"
    status = 405


class Conflict(DashtuneError):
    code = "Conflict"
    status = 409


class RequestTooLarge(DashtuneError):
    code = "RequestTooLarge"
    status = 413


class UnsupportedMediaType(DashtuneError):
    """Wrong Content-Type; rendered as 415 with code InvalidParameter (§1 has no own code)."""

    code = "InvalidParameter"
    status = 415


class Throttling(DashtuneError):
    code = "Throttling"
    status = 429


class ServiceUnavailable(DashtuneError):
    """Serving is off, starting, or restarting, or a model is loading: retry later."""

    code = "ServiceUnavailable"
    status = 503
    retry_after = 2


class InsufficientStorage(DashtuneError):
    """The disk of the data directory (or the database's) is full; retry once space is freed."""

    code = "InsufficientStorage"
    status = 507


class InternalError(DashtuneError):
    code = "InternalError"
    status = 500
