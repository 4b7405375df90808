"""`Client`: the dashtune HTTP API as Python methods, returning the envelopes' payloads.

Every failure, from a DashScope error envelope to a refused connection, surfaces as
one `ApiError` with a code and a message. Streams (job events, chat) are read with
httpx-sse rather than parsed by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from dashtune.client.errors import ApiError
from dashtune.client.profile import Profile, load

API = "/api/v1"
COMPAT = "/compatible-mode/v1"


def _error_from(response: httpx.Response) -> ApiError:
    """The error a non-2xx response carries: DashScope `{code, message}` or OpenAI `{error}`."""
    request_id = response.headers.get("x-request-id")
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict):
        nested = body.get("error")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else body
        code = inner.get("code") or inner.get("type")
        message = inner.get("message")
        if code or message:
            return ApiError(
                str(code or f"HTTP{response.status_code}"),
                str(message or response.reason_phrase),
                status=response.status_code,
                request_id=body.get("request_id") or request_id,
            )
    text = response.text.strip()[:300] or response.reason_phrase
    return ApiError(
        f"HTTP{response.status_code}", text, status=response.status_code, request_id=request_id
    )


class Client:
    """A connection to one dashtune server with one API key."""

    def __init__(self, url: str, key: str, *, timeout: float = 60.0) -> None:
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(timeout, connect=10.0),
        )

    @classmethod
    def from_profile(cls, profile: Profile) -> Client:
        return cls(profile.url, profile.require_key())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------

    def _transport_error(self, exc: httpx.HTTPError) -> ApiError:
        if isinstance(exc, httpx.TimeoutException):
            return ApiError("Timeout", f"dashtune at {self.url} did not answer in time ({exc}).")
        return ApiError(
            "ConnectionError",
            f"Cannot reach dashtune at {self.url} ({exc}). Is the server running? "
            "Set DASHTUNE_URL or run `dashtune login --url URL --key KEY`.",
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the parsed JSON body of a 2xx answer, else `ApiError`."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        if response.status_code >= 400:
            raise _error_from(response)
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiError(
                "InvalidResponse",
                f"{method} {path} answered {response.status_code} with a body that is not JSON.",
                status=response.status_code,
                request_id=response.headers.get("x-request-id"),
            ) from None

    def events(self, method: str, path: str, **kwargs: Any) -> Iterator[tuple[str, str]]:
        """(event, data) pairs of a Server-Sent Events response, until the server ends it."""
        try:
            with connect_sse(self._http, method, path, **kwargs) as source:
                if source.response.status_code >= 400:
                    source.response.read()
                    raise _error_from(source.response)
                for sse in source.iter_sse():
                    yield sse.event, sse.data
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        except SSEError as exc:
            raise ApiError("InvalidResponse", f"{path} is not an event stream: {exc}.") from None

    # -- files (§2: payload under `data`) ------------------------------------------------

    def upload_file(self, path: Path, description: str = "") -> dict[str, Any]:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ApiError("InvalidParameter", f"Cannot read {path}: {exc.strerror}.") from None
        body = self.request(
            "POST",
            f"{API}/files",
            files={"files": (path.name, content, "application/jsonl")},
            data={"descriptions": description, "purpose": "fine-tune"},
        )
        uploaded: dict[str, Any] = body["data"]["uploaded_files"][0]
        return uploaded

    def list_files(self, page_no: int = 1, page_size: int = 10) -> dict[str, Any]:
        params = {"page_no": page_no, "page_size": page_size}
        data: dict[str, Any] = self.request("GET", f"{API}/files", params=params)["data"]
        return data

    def get_file(self, file_id: str) -> dict[str, Any]:
        data: dict[str, Any] = self.request("GET", f"{API}/files/{file_id}")["data"]
        return data

    def delete_file(self, file_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"{API}/files/{file_id}").get("data") or {})

    # -- fine-tune jobs (§3: payload under `output`) -------------------------------------

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", f"{API}/fine-tunes", json=body)["output"])

    def estimate_job(self, body: dict[str, Any]) -> dict[str, Any]:
        """The pre-flight estimate of a create body (nothing is queued)."""
        # The first estimate of a fresh server may build the built-in model's tokenizer.
        out = self.request("POST", f"{API}/fine-tunes/estimate", json=body, timeout=300)
        return dict(out["output"])

    # -- webhooks (extension) ------------------------------------------------------------

    def create_webhook(self, url: str, event_types: list[str] | None) -> dict[str, Any]:
        body = {"url": url, "event_types": event_types or None}
        return dict(self.request("POST", f"{API}/webhooks", json=body)["output"])

    def list_webhooks(self) -> list[dict[str, Any]]:
        return list(self.request("GET", f"{API}/webhooks")["output"]["webhooks"])

    def delete_webhook(self, webhook_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"{API}/webhooks/{webhook_id}")["output"])

    def webhook_deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        out = self.request("GET", f"{API}/webhooks/{webhook_id}/deliveries")["output"]
        return list(out["deliveries"])

    def list_jobs(
        self, page_no: int = 1, page_size: int = 10, model: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"page_no": page_no, "page_size": page_size}
        if model:
            params["model"] = model
        return dict(self.request("GET", f"{API}/fine-tunes", params=params)["output"])

    def get_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("GET", f"{API}/fine-tunes/{job_id}")["output"])

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"{API}/fine-tunes/{job_id}/cancel")["output"])

    def pause_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"{API}/fine-tunes/{job_id}/pause")["output"])

    def resume_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("POST", f"{API}/fine-tunes/{job_id}/resume")["output"])

    def delete_job(self, job_id: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"{API}/fine-tunes/{job_id}")["output"])

    def job_logs(self, job_id: str, offset: int = 0, line: int = 100) -> dict[str, Any]:
        params = {"offset": offset, "line": line}
        return dict(self.request("GET", f"{API}/fine-tunes/{job_id}/logs", params=params)["output"])

    def job_events(self, job_id: str, offset: int | None = None) -> Iterator[dict[str, Any]]:
        """The job's stream: `{"type": "log"|"metrics"|"status", ...}` until it ends; from
        the log's last lines, or from line `offset` + 1."""
        params = {} if offset is None else {"offset": offset}
        path = f"{API}/fine-tunes/{job_id}/stream"
        for event, data in self.events("GET", path, params=params):
            payload = json.loads(data) if data else {}
            if event == "error":
                raise ApiError(
                    str(payload.get("code", "StreamError")), str(payload.get("message", data))
                )
            yield payload

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"{API}/fine-tunes/{job_id}/checkpoints")["output"])

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.request("GET", f"{API}/fine-tunes/{job_id}/metrics")["output"]["metrics"])

    def export(self, job_id: str, checkpoint: str, model_name: str) -> Any:
        path = f"{API}/fine-tunes/{job_id}/export/{checkpoint}"
        return self.request("POST", path, params={"model_name": model_name})["output"]

    # -- deployments (§5) ----------------------------------------------------------------

    def create_deployment(
        self, model_name: str, capacity: int = 1, suffix: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model_name": model_name, "capacity": capacity}
        if suffix:
            body["suffix"] = suffix
        return dict(self.request("POST", f"{API}/deployments", json=body)["output"])

    def list_deployments(self, page_no: int = 1, page_size: int = 10) -> dict[str, Any]:
        params = {"page_no": page_no, "page_size": page_size}
        return dict(self.request("GET", f"{API}/deployments", params=params)["output"])

    def get_deployment(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"{API}/deployments/{name}")["output"])

    def scale_deployment(self, name: str, capacity: int) -> dict[str, Any]:
        path = f"{API}/deployments/{name}/scale"
        return dict(self.request("PUT", path, json={"capacity": capacity})["output"])

    def delete_deployment(self, name: str) -> dict[str, Any]:
        return dict(self.request("DELETE", f"{API}/deployments/{name}").get("output") or {})

    # -- chat (OpenAI-compatible) ---------------------------------------------------------

    def chat(self, model: str, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        body = {"model": model, "messages": messages, **params, "stream": False}
        return dict(self.request("POST", f"{COMPAT}/chat/completions", json=body))

    def chat_stream(
        self, model: str, messages: list[dict[str, str]], **params: Any
    ) -> Iterator[str]:
        """The assistant's reply, piece by piece, as the server streams it."""
        body = {"model": model, "messages": messages, **params, "stream": True}
        for event, data in self.events("POST", f"{COMPAT}/chat/completions", json=body):
            if data.strip() == "[DONE]":
                return
            chunk = json.loads(data)
            if event == "error" or "error" in chunk:
                err = chunk.get("error", chunk)
                raise ApiError(str(err.get("code", "StreamError")), str(err.get("message", data)))
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


def connect() -> Client:
    """A client for the server and key in effect (environment, then the profile file)."""
    return Client.from_profile(load())
