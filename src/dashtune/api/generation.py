"""Text generation (§5): the native DashScope route, and the proxy to the serving process
that the OpenAI-compatible route (api/compat.py) shares.

The API process never runs a model: it checks who may call what (services.deployments),
then forwards the request to the serving process and renders its answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import json_body, ok, request_id
from dashtune.api.sse import DashScopeEvent, error_event
from dashtune.domain.errors import InvalidParameter
from dashtune.services import deployments
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.serving.client import ServiceUnavailable, ServingStream
from dashtune.serving.protocol import (
    ChatMessage,
    Completion,
    GenerateRequest,
    LoadSpec,
    Sampling,
    Usage,
    validated,
)

router = APIRouter(prefix="/api/v1/services/aigc/text-generation", tags=["generation"])

RESULT_FORMATS = ("text", "message")


class Conversation(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1)


@dataclass(frozen=True)
class Call:
    """One inference request, whichever API it came through."""

    model: Any
    messages: list[ChatMessage]
    sampling: Sampling
    tuned_on_demand: bool = False  # fine-tuned models callable undeployed (OpenAI route)


def conversation(messages: Any, where: str) -> list[ChatMessage]:
    """Validated messages, or 400 naming the bad one (e.g. `messages.1.role`)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidParameter(f"Missing {where}: a non-empty array of {{role, content}}.")
    return validated(Conversation, {"messages": messages}, where.rpartition(".")[0]).messages


async def _serving_request(
    request: Request, who: Principal, rt: Runtime, call: Call, stream: bool
) -> tuple[Any, GenerateRequest]:
    """The serving client and the request for it; 404/400 for names that are not callable."""
    supervisor = request.app.state.serving
    target = await run_in_threadpool(
        deployments.resolve_target, rt, who, call.model, call.tuned_on_demand
    )
    if supervisor is None:
        raise ServiceUnavailable("Serving is disabled on this server (DASHTUNE_SERVING=false).")
    if not await supervisor.wait_ready(rt.settings.serving_start_timeout):
        raise ServiceUnavailable("The serving process is not up yet; retry shortly.")
    load = None
    if target.weights is not None:
        w = target.weights
        load = LoadSpec(base_path=w.base_path, adapter_path=w.adapter_path, builtin=w.builtin)
    req = GenerateRequest(
        key=target.key,
        messages=call.messages,
        sampling=call.sampling,
        stream=stream,
        load=load,
        capacity=target.capacity,
    )
    return supervisor.client, req


async def complete(request: Request, who: Principal, rt: Runtime, call: Call) -> Completion:
    client, req = await _serving_request(request, who, rt, call, stream=False)
    result: Completion = await client.complete(req, str(call.model))
    return result


async def open_stream(request: Request, who: Principal, rt: Runtime, call: Call) -> ServingStream:
    client, req = await _serving_request(request, who, rt, call, stream=True)
    result: ServingStream = await client.open_stream(req, str(call.model))
    return result


# -- the native route ------------------------------------------------------------------


@dataclass(frozen=True)
class NativeCall:
    call: Call
    result_format: str
    incremental: bool
    stream: bool


def _native_call(body: dict[str, Any], sse_header: str | None) -> NativeCall:
    inp = body.get("input")
    if not isinstance(inp, dict):
        raise InvalidParameter('Missing input: {"messages": [...]} or {"prompt": "..."}.')
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InvalidParameter("parameters must be a JSON object.")
    messages = inp.get("messages")
    raw = list(messages) if isinstance(messages, list) else []
    if isinstance(inp.get("prompt"), str) and inp["prompt"]:
        raw.append({"role": "user", "content": inp["prompt"]})
    fmt = params.get("result_format") or "text"
    if fmt not in RESULT_FORMATS:
        raise InvalidParameter(
            f"parameters.result_format must be 'text' or 'message', got {fmt!r}."
        )
    if params.get("n") not in (None, 1):
        raise InvalidParameter("parameters.n: only 1 choice per request is supported.")
    call = Call(
        model=body.get("model"),
        messages=conversation(raw, "input.messages"),
        sampling=validated(Sampling, params, "parameters"),
    )
    stream = (sse_header or "").lower() == "enable" or params.get("stream") is True
    return NativeCall(call, fmt, params.get("incremental_output") is True, stream)


def native_output(fmt: str, text: str, finish_reason: str) -> dict[str, Any]:
    """`output` in the requested result_format; streams use finish_reason "null" until the end."""
    if fmt == "message":
        message = {"role": "assistant", "content": text}
        return {"choices": [{"finish_reason": finish_reason, "message": message}]}
    return {"text": text, "finish_reason": finish_reason}


def native_usage(u: Usage) -> dict[str, int]:
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
    }


@router.post("/generation", response_model=None)
async def generation(
    request: Request, who: Caller, rt: RuntimeDep
) -> JSONResponse | EventSourceResponse:
    """`dashscope.Generation.call`: JSON, or SSE frames with `X-DashScope-SSE: enable`."""
    body = await json_body(request)
    native = _native_call(body, request.headers.get("x-dashscope-sse"))
    if not native.stream:
        done = await complete(request, who, rt, native.call)
        output = native_output(native.result_format, done.text, done.finish_reason)
        return ok(output, usage=native_usage(done.usage))
    stream = await open_stream(request, who, rt, native.call)
    return EventSourceResponse(
        _native_frames(stream, native, request_id(), rt.settings.data_dir), ping=15
    )


async def _native_frames(
    stream: ServingStream, native: NativeCall, rid: str, data_dir: Path
) -> AsyncIterator[DashScopeEvent]:
    """One frame per text delta (cumulative text unless incremental_output), then the end."""
    text, frame = "", 0
    async for line in stream.lines():
        frame += 1
        if line.error is not None:
            yield error_event(
                line.error.code, line.error.message, rid, 500, id=frame, data_dir=data_dir
            )
            return
        if line.delta is not None and line.usage is not None:
            text += line.delta
            piece = line.delta if native.incremental else text
            yield DashScopeEvent(
                {
                    "output": native_output(native.result_format, piece, "null"),
                    "usage": native_usage(line.usage),
                    "request_id": rid,
                },
                id=frame,
            )
        if line.done is not None:
            piece = "" if native.incremental else line.done.text
            yield DashScopeEvent(
                {
                    "output": native_output(native.result_format, piece, line.done.finish_reason),
                    "usage": native_usage(line.done.usage),
                    "request_id": rid,
                },
                id=frame,
            )
            return
