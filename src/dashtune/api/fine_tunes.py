"""Fine-tune job routes (§3): create, list, get, cancel, delete, logs, stream, checkpoints, export."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import json_body, ok, request_id
from dashtune.api.paging import PageNo, PageSize
from dashtune.api.sse import error_event
from dashtune.api.views import checkpoint_view, job_view
from dashtune.domain.errors import DashtuneError
from dashtune.domain.states import is_terminal
from dashtune.services import jobs
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal

router = APIRouter(prefix="/api/v1/fine-tunes", tags=["fine-tunes"])

STREAM_POLL_SECONDS = 0.5


@router.post("")
async def create(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    body = await json_body(request)
    req = jobs.CreateJob(
        model=body.get("model"),
        training_file_ids=body.get("training_file_ids"),
        validation_file_ids=body.get("validation_file_ids"),
        training_type=body.get("training_type"),
        hyper_parameters=body.get("hyper_parameters"),
        finetuned_output_suffix=body.get("finetuned_output_suffix"),
        model_name=body.get("model_name") or body.get("finetuned_output"),
        job_name=body.get("job_name"),
    )
    job = await run_in_threadpool(jobs.create, rt, who, req)
    return ok(job_view(job))


@router.get("")
def list_jobs(
    who: Caller,
    rt: RuntimeDep,
    page_no: PageNo = 1,
    page_size: PageSize = 10,
    model: str | None = None,
) -> JSONResponse:
    rows, total = jobs.page(rt, who, page_no, page_size, model)
    return ok(
        {
            "jobs": [job_view(j) for j in rows],
            "total": total,
            "page_no": page_no,
            "page_size": page_size,
        }
    )


@router.get("/{job_id}")
def get_job(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok(job_view(jobs.get(rt, who, job_id)))


@router.post("/{job_id}/cancel")
def cancel(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    jobs.cancel(rt, who, job_id)
    return ok({"status": "success"})


@router.delete("/{job_id}")
def delete(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    jobs.delete(rt, who, job_id)
    return ok({"status": "success"})


@router.get("/{job_id}/logs")
def logs(
    job_id: str,
    who: Caller,
    rt: RuntimeDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    line: Annotated[int, Query(ge=1)] = 100,
) -> JSONResponse:
    lines, total = jobs.logs(rt, who, job_id, offset, min(line, jobs.MAX_LOG_LINES))
    return ok({"total": total, "logs": lines})


@router.get("/{job_id}/checkpoints")
def checkpoints(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok([checkpoint_view(c) for c in jobs.checkpoints(rt, who, job_id)])


@router.get("/{job_id}/metrics")
def metrics(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """dashtune extension: every recorded metric point, for loss curves."""
    rows = jobs.metrics(rt, who, job_id)
    return ok({"metrics": [{"step": m.step, **m.values} for m in rows]})


@router.api_route("/{job_id}/export/{checkpoint}", methods=["GET", "POST"])
def export(
    job_id: str, checkpoint: str, who: Caller, rt: RuntimeDep, model_name: str | None = None
) -> JSONResponse:
    jobs.export(rt, who, job_id, checkpoint, model_name)
    return ok(True)


@router.get("/{job_id}/stream")
async def stream(job_id: str, who: Caller, rt: RuntimeDep) -> EventSourceResponse:
    await run_in_threadpool(jobs.get, rt, who, job_id)  # 404 before the stream opens
    return EventSourceResponse(_job_events(rt, who, job_id), ping=15)


async def _job_events(rt: Runtime, who: Principal, job_id: str) -> AsyncIterator[Any]:
    """Status changes, log lines and metrics as `data:` JSON until the job ends."""
    seen_lines = 0
    last_status = None
    last_metrics: dict[str, Any] | None = None
    while True:
        try:
            job = await run_in_threadpool(jobs.get, rt, who, job_id)
            lines, total = await run_in_threadpool(jobs.logs, rt, who, job_id, seen_lines, 1000)
        except DashtuneError as exc:
            # `event:error` exactly as the SDKs match it (sse-starlette would write `event: error`).
            yield error_event(exc.code, exc.message, request_id(), exc.status)
            return
        for line in lines:
            yield {"data": json.dumps({"type": "log", "job_id": job_id, "line": line})}
        seen_lines += len(lines)
        if job.metrics and job.metrics != last_metrics:
            last_metrics = job.metrics
            yield {"data": json.dumps({"type": "metrics", "job_id": job_id, **job.metrics})}
        if job.status != last_status:
            last_status = job.status
            yield {
                "data": json.dumps(
                    {
                        "type": "status",
                        "job_id": job_id,
                        "status": job.status,
                        "progress": job.progress,
                    }
                )
            }
        if is_terminal(job.status) and seen_lines >= total:
            return
        await asyncio.sleep(STREAM_POLL_SECONDS)
