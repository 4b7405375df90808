"""OpenAI's fine-tuning jobs API under /compatible-mode/v1 (`client.fine_tuning.jobs`).

Parses and renders only: the conversions are domain.openai_shapes, the use cases
services.openai_jobs, on the same jobs as /api/v1/fine-tunes.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.compat import OpenAIRoute
from dashtune.api.envelope import json_body
from dashtune.services import jobs, openai_jobs

router = APIRouter(
    prefix="/compatible-mode/v1/fine_tuning/jobs", tags=["openai"], route_class=OpenAIRoute
)
METADATA_PARAM = re.compile(r"^metadata\[(.+)\]$")
Limit = Annotated[int | None, Query()]


def _list(page: openai_jobs.Page) -> JSONResponse:
    return JSONResponse({"object": "list", "data": page.data, "has_more": page.has_more})


@router.post("")
async def create(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    body = await json_body(request)
    return JSONResponse(await run_in_threadpool(openai_jobs.create, rt, who, body))


@router.get("")
def list_jobs(
    request: Request, who: Caller, rt: RuntimeDep, after: str | None = None, limit: Limit = None
) -> JSONResponse:
    """`metadata[k]=v` query parameters filter (deepObject style, as the SDK sends them)."""
    wanted = {
        m.group(1): v
        for k, v in request.query_params.multi_items()
        if (m := METADATA_PARAM.match(k))
    }
    return _list(openai_jobs.page(rt, who, after, limit, wanted))


@router.get("/{job_id}")
def retrieve(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return JSONResponse(openai_jobs.retrieve(rt, who, job_id))


@router.delete("/{job_id}")
def delete(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """Extension (OpenAI has none): the DashScope delete, for ended jobs."""
    jobs.delete(rt, who, job_id)
    return JSONResponse({"id": job_id, "object": "fine_tuning.job", "deleted": True})


@router.post("/{job_id}/cancel")
def cancel(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return JSONResponse(openai_jobs.cancel(rt, who, job_id))


@router.post("/{job_id}/pause")
def pause(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return JSONResponse(openai_jobs.pause_or_resume(rt, who, job_id, "pause"))


@router.post("/{job_id}/resume")
def resume(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return JSONResponse(openai_jobs.pause_or_resume(rt, who, job_id, "resume"))


@router.get("/{job_id}/events")
def events(
    job_id: str, who: Caller, rt: RuntimeDep, after: str | None = None, limit: Limit = None
) -> JSONResponse:
    return _list(openai_jobs.events(rt, who, job_id, after, limit))


@router.get("/{job_id}/checkpoints")
def checkpoints(
    job_id: str, who: Caller, rt: RuntimeDep, after: str | None = None, limit: Limit = None
) -> JSONResponse:
    return _list(openai_jobs.checkpoints(rt, who, job_id, after, limit))
