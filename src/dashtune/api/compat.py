"""The OpenAI-compatible routes (`/compatible-mode/v1`): chat completions and models.

Same keys, same models and same serving path as the native route; only the shapes
differ, errors included: every error raised while handling these routes (auth too)
renders as OpenAI's `{"error": {message, type, code, param}}`: through `OpenAIRoute` here,
and through `envelope.error_response` for what fails outside a route (unknown paths, 500s).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api import generation
from dashtune.api.auth import Caller, RuntimeDep, app_runtime
from dashtune.api.envelope import error_response, json_body, request_id
from dashtune.api.openai_errors import openai_error
from dashtune.domain.errors import DashtuneError, InvalidParameter
from dashtune.domain.redaction import hide_paths
from dashtune.services import deployments
from dashtune.serving.client import ServingStream
from dashtune.serving.protocol import Sampling, Usage, validated


class OpenAIRoute(APIRoute):
    """Renders DashtuneError (and validation errors) in OpenAI's shape on these routes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except DashtuneError as exc:
                return error_response(exc, request.url.path, app_runtime(request).settings.data_dir)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                message = (
                    f"Parameter {'.'.join(map(str, first.get('loc', ())))}: {first.get('msg')}."
                )
                return JSONResponse(
                    openai_error("InvalidParameter", message, 400, request_id()), status_code=400
                )

        return route


router = APIRouter(prefix="/compatible-mode/v1", tags=["openai"], route_class=OpenAIRoute)


def _call(body: dict[str, Any]) -> generation.Call:
    if body.get("n") not in (None, 1):
        raise InvalidParameter("n: only 1 choice per request is supported.")
    params = dict(body)
    if params.get("max_tokens") is None and params.get("max_completion_tokens") is not None:
        params["max_tokens"] = params["max_completion_tokens"]
    return generation.Call(
        model=body.get("model"),
        messages=generation.conversation(body.get("messages"), "messages"),
        sampling=validated(Sampling, params, ""),
        tuned_on_demand=True,
    )


def _usage(u: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    request: Request, who: Caller, rt: RuntimeDep
) -> JSONResponse | EventSourceResponse:
    body = await json_body(request)
    call = _call(body)
    head = {
        "id": f"chatcmpl-{request_id()}",
        "created": int(time.time()),
        "model": call.model,
        "system_fingerprint": None,
    }
    if body.get("stream") is not True:
        done = await generation.complete(request, who, rt, call)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": done.text},
            "logprobs": None,
            "finish_reason": done.finish_reason,
        }
        return JSONResponse(
            {**head, "object": "chat.completion", "choices": [choice], "usage": _usage(done.usage)}
        )
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    stream = await generation.open_stream(request, who, rt, call)
    return EventSourceResponse(_chunks(stream, head, include_usage, rt.settings.data_dir), ping=15)


async def _chunks(
    stream: ServingStream, head: dict[str, Any], include_usage: bool, data_dir: Path
) -> AsyncIterator[dict[str, str]]:
    """`chat.completion.chunk`s: the role, the content deltas, the finish reason, then
    (with stream_options.include_usage) the usage, and `[DONE]`."""
    head = {**head, "object": "chat.completion.chunk"}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, str]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {"data": json.dumps({**head, "choices": [choice]}, ensure_ascii=False)}

    yield chunk({"role": "assistant", "content": ""})
    async for line in stream.lines():
        if line.error is not None:
            yield {
                "data": json.dumps(
                    openai_error(
                        line.error.code,
                        hide_paths(line.error.message, data_dir),
                        500,
                        request_id(),
                    )
                )
            }
            return
        if line.delta:
            yield chunk({"content": line.delta})
        if line.done is not None:
            yield chunk({}, line.done.finish_reason)
            if include_usage:
                usage = {**head, "choices": [], "usage": _usage(line.done.usage)}
                yield {"data": json.dumps(usage)}
            yield {"data": "[DONE]"}
            return


@router.get("/models")
async def models(who: Caller, rt: RuntimeDep) -> JSONResponse:
    """What `model` may name here: RUNNING deployments of the workspace, then base models."""
    rows = await run_in_threadpool(deployments.callable_models, rt, who)
    data = [
        {
            "id": name,
            "object": "model",
            "created": int(created.replace(tzinfo=UTC).timestamp()) if created else 0,
            "owned_by": owner,
        }
        for name, created, owner in rows
    ]
    return JSONResponse({"object": "list", "data": data})
