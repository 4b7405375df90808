"""Fine-tune job routes (§3): create, list, get, cancel, delete, logs, stream, checkpoints,
export; and the dashtune extensions pause, resume and metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import json_body, ok, request_id
from dashtune.api.job_feed import JobFeed
from dashtune.api.paging import PageNo, PageSize
from dashtune.api.sse import DashScopeEvent, error_event
from dashtune.api.views import checkpoint_view, job_view
from dashtune.domain.errors import DashtuneError, NotFound
from dashtune.domain.redaction import hide_paths
from dashtune.domain.states import is_terminal
from dashtune.services import job_reads, jobs
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal

router = APIRouter(prefix="/api/v1/fine-tunes", tags=["fine-tunes"])


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
    return ok(job_view(job, rt.settings.data_dir))


@router.get("")
def list_jobs(
    who: Caller,
    rt: RuntimeDep,
    page_no: PageNo = 1,
    page_size: PageSize = 10,
    model: str | None = None,
) -> JSONResponse:
    rows, total = job_reads.page(rt, who, page_no, page_size, model)
    data_dir = rt.settings.data_dir

    def output(checked: bool) -> dict[str, Any]:
        return {
            "jobs": [job_view(j, data_dir, checked=checked) for j in rows],
            "total": total,
            "page_no": page_no,
            "page_size": page_size,
        }

    return ok(output(False), fallback=lambda: output(True))


@router.get("/{job_id}")
def get_job(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    job = job_reads.get(rt, who, job_id)
    data_dir = rt.settings.data_dir
    return ok(job_view(job, data_dir, checked=False), fallback=lambda: job_view(job, data_dir))


@router.post("/{job_id}/cancel")
def cancel(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    jobs.cancel(rt, who, job_id)
    return ok({"status": "success"})


@router.post("/{job_id}/pause")
def pause(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """dashtune extension: save a resume point and free the job's slot (PAUSING -> PAUSED)."""
    return ok(job_view(jobs.pause(rt, who, job_id)))


@router.post("/{job_id}/resume")
def resume(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """dashtune extension: queue a PAUSED job again; it continues from its resume point."""
    return ok(job_view(jobs.resume(rt, who, job_id)))


@router.delete("/{job_id}")
def delete(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    jobs.delete(rt, who, job_id)
    return ok({"status": "success"})


@router.get("/{job_id}/logs")
def logs(
    job_id: str,
    who: Caller,
    rt: RuntimeDep,
    offset: Annotated[int, Query(ge=0, le=jobs.MAX_LOG_OFFSET)] = 0,
    line: Annotated[int, Query(ge=1, le=2**31 - 1)] = 100,
) -> JSONResponse:
    lines, total = jobs.logs(rt, who, job_id, offset, min(line, jobs.MAX_LOG_LINES))
    return ok({"total": total, "logs": [hide_paths(x, rt.settings.data_dir) for x in lines]})


@router.get("/{job_id}/checkpoints")
def checkpoints(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok([checkpoint_view(c) for c in jobs.checkpoints(rt, who, job_id)])


@router.get("/{job_id}/metrics")
def metrics(job_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """dashtune extension: every recorded metric point, for loss curves."""
    rows = jobs.metrics(rt, who, job_id)
    return ok({"metrics": [{"step": m.step, **m.values} for m in rows]})


@router.get("/{job_id}/export/{checkpoint}")
@router.post("/{job_id}/export/{checkpoint}")
def export(
    job_id: str, checkpoint: str, who: Caller, rt: RuntimeDep, model_name: str | None = None
) -> JSONResponse:
    jobs.export(rt, who, job_id, checkpoint, model_name)
    return ok(True)


@router.get("/{job_id}/stream")
async def stream(
    job_id: str,
    request: Request,
    who: Caller,
    rt: RuntimeDep,
    offset: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
) -> EventSourceResponse:
    """From the log's last lines on; `Last-Event-ID: N` or `?offset=N` asks for the lines
    after line N (each log event's `id` is its line number)."""
    await run_in_threadpool(jobs.get, rt, who, job_id)  # 404 before the stream opens
    last = request.headers.get("last-event-id", "")
    after = offset if offset is not None else (int(last) if last.isdigit() else None)
    feed: JobFeed = request.app.state.job_feed
    return EventSourceResponse(_job_events(rt, who, feed, job_id, after), ping=15)


async def _job_events(
    rt: Runtime, who: Principal, feed: JobFeed, job_id: str, after: int | None
) -> AsyncIterator[Any]:
    """Log lines, metrics and status changes as DashScope `data:` frames until the job ends.

    Log lines come from the process's shared feed; metric frames are the recorded points,
    each with its own step, read only when the job's latest metrics changed."""
    async with feed.watch(job_id) as watch:
        snap = await watch.next()
        seen = after if after is not None else max(0, (snap.log_count if snap else 0) - feed.tail)
        # From the end: the newest point only (history with Last-Event-ID / ?offset=).
        seen_metric = (
            0 if after is not None else await run_in_threadpool(jobs.metric_before_last, rt, job_id)
        )
        last_status = None
        last_metrics: dict[str, Any] | None = None

        def failed(exc: DashtuneError) -> DashScopeEvent:  # the stream's last frame
            return error_event(
                exc.code, exc.message, request_id(), exc.status, data_dir=rt.settings.data_dir
            )

        while True:
            if snap is None:
                yield failed(NotFound(f"Fine-tune job '{job_id}' not found."))
                return
            while seen < snap.log_count:
                lines = await watch.lines_after(seen, snap.log_count)
                if not lines:
                    break
                for seq, line in lines:
                    line = hide_paths(line, rt.settings.data_dir)
                    yield DashScopeEvent({"type": "log", "job_id": job_id, "line": line}, id=seq)
                seen = lines[-1][0]
            if snap.metrics and snap.metrics != last_metrics:
                last_metrics = snap.metrics
                try:
                    points = await run_in_threadpool(jobs.metrics, rt, who, job_id, seen_metric)
                except DashtuneError as exc:
                    yield failed(exc)
                    return
                for point in points:
                    seen_metric = point.id
                    frame = {"type": "metrics", "job_id": job_id, **point.values}
                    frame["step"] = point.step
                    if snap.total_steps:
                        frame["total_steps"] = snap.total_steps
                    yield DashScopeEvent(frame)
            if snap.status != last_status:
                last_status = snap.status
                yield DashScopeEvent(
                    {
                        "type": "status",
                        "job_id": job_id,
                        "status": snap.status,
                        "progress": snap.progress,
                        "total_steps": snap.total_steps,
                    }
                )
            if is_terminal(snap.status) and seen >= snap.log_count:
                return
            snap = await watch.next()
