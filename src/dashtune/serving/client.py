"""The API process's side of the serving process: HTTP over loopback with httpx.

`ServingClient` (async) proxies inference from request handlers; `ControlClient`
(blocking) is the supervisor thread's load/unload/stats. The serving process's answers
become the DashScope error types here, so the API renders them like any other error.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

from dashtune.domain.errors import (
    DashtuneError,
    InternalError,
    InvalidParameter,
    ServiceUnavailable,
    Throttling,
)
from dashtune.serving.protocol import (
    TOKEN_HEADER,
    Completion,
    ErrorBody,
    GenerateRequest,
    LoadRequest,
    LoadSpec,
    StreamLine,
    UnloadRequest,
)

__all__ = ["ServiceUnavailable", "ServingClient", "ControlClient", "ServingStream", "LoadFailed"]


class LoadFailed(Exception):
    """The serving process could not load a model; the message says why."""


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    return body if isinstance(body, dict) else {"message": response.text[:300]}


def _error(response: httpx.Response, model: str) -> DashtuneError:
    """The caller-facing error for a serving process's non-200 answer to /generate."""
    body = _body(response)
    code, message = str(body.get("code", "")), str(body.get("message", ""))
    if response.status_code == 404:  # a restart lost it; the supervisor is loading it again
        return ServiceUnavailable(
            f"Model '{model}' is being loaded again by the serving process; retry shortly."
        )
    if response.status_code == 429:
        return Throttling(
            f"Model '{model}' is busy: {message}. Retry, or scale the deployment's capacity."
        )
    if code == "ModelLoadError":
        return InvalidParameter(f"Model '{model}' cannot be served: {message}")
    if response.status_code == 400:
        return InvalidParameter(message)
    return InternalError(f"Generation with '{model}' failed: {message or code}")


class ServingStream:
    """An open streamed generation; `lines()` yields it and closes the connection at the end."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def lines(self) -> AsyncIterator[StreamLine]:
        try:
            async for raw in self._response.aiter_lines():
                if raw.strip():
                    yield StreamLine.model_validate_json(raw)
        except httpx.HTTPError as exc:
            message = f"the serving process stopped answering: {exc}"
            yield StreamLine(error=ErrorBody(code="InternalError", message=message))
        finally:
            await self._response.aclose()

    async def aclose(self) -> None:
        await self._response.aclose()


# A generation answers (or sends its next streamed line) within this, or it is given up:
# long enough for a long answer from a large model on a CPU, short of hanging forever.
GENERATE_TIMEOUT_SECONDS = 600.0


class ServingClient:
    def __init__(self, url: str, token: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=url,
            headers={TOKEN_HEADER: token},
            timeout=httpx.Timeout(GENERATE_TIMEOUT_SECONDS, connect=5.0),
        )

    async def complete(self, req: GenerateRequest, model: str) -> Completion:
        try:
            response = await self._http.post("/generate", json=req.model_dump())
        except httpx.TimeoutException:
            raise InternalError(
                f"Generation with '{model}' took over {GENERATE_TIMEOUT_SECONDS:.0f} s."
            ) from None
        except httpx.TransportError as exc:
            raise _unavailable(exc) from None
        if response.status_code != 200:
            raise _error(response, model)
        return Completion.model_validate(response.json())

    async def open_stream(self, req: GenerateRequest, model: str) -> ServingStream:
        """Start a streamed generation; errors known before the first token raise here."""
        request = self._http.build_request("POST", "/generate", json=req.model_dump())
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _unavailable(exc) from None
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise _error(response, model)
        return ServingStream(response)

    async def aclose(self) -> None:
        await self._http.aclose()


def _unavailable(exc: Exception) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The serving process is not reachable ({exc}); it is restarted automatically, "
        "retry shortly."
    )


class ControlClient:
    """Blocking calls for the supervisor thread."""

    def __init__(self, url: str, token: str, load_timeout: float) -> None:
        self._http = httpx.Client(
            base_url=url,
            headers={TOKEN_HEADER: token},
            timeout=httpx.Timeout(load_timeout, connect=2.0),
        )

    def healthy(self) -> bool:
        try:
            return self._http.get("/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def load(self, key: str, spec: LoadSpec, capacity: int) -> None:
        """Load (or re-slot) `key`; LoadFailed when the weights cannot be loaded."""
        body = LoadRequest(key=key, spec=spec, capacity=capacity).model_dump()
        response = self._http.post("/load", json=body)
        if response.status_code != 200:
            raise LoadFailed(str(_body(response).get("message", response.text[:300])))

    def unload(self, key: str) -> None:
        self._http.post("/unload", json=UnloadRequest(key=key).model_dump()).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self._http.get("/stats", timeout=5.0)
        response.raise_for_status()
        return dict(response.json())

    def close(self) -> None:
        self._http.close()
