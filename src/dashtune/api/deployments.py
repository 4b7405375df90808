"""Deployment routes (§5): create, list, get, scale, delete, stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import json_body, ok, request_id
from dashtune.api.paging import PageNo, PageSize
from dashtune.api.sse import DashScopeEvent, error_event
from dashtune.api.views import deployment_view
from dashtune.domain.deployments import DeploymentStatus as S
from dashtune.domain.errors import DashtuneError
from dashtune.services import deployments
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"])

STREAM_POLL_SECONDS = 0.5


@router.post("")
async def create(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    body = await json_body(request)
    req = deployments.CreateDeployment(
        model_name=body.get("model_name", body.get("model")),
        capacity=body.get("capacity"),
        suffix=body.get("suffix"),
    )
    dep = await run_in_threadpool(deployments.create, rt, who, req)
    _wake_serving(request)
    return ok(deployment_view(dep, rt.settings.data_dir))


@router.get("")
def list_deployments(
    who: Caller, rt: RuntimeDep, page_no: PageNo = 1, page_size: PageSize = 10
) -> JSONResponse:
    rows, total = deployments.page(rt, who, page_no, page_size)
    return ok(
        {
            "deployments": [deployment_view(d, rt.settings.data_dir) for d in rows],
            "total": total,
            "page_no": page_no,
            "page_size": page_size,
        }
    )


@router.get("/{deployed_model}")
def get_deployment(deployed_model: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok(deployment_view(deployments.get(rt, who, deployed_model), rt.settings.data_dir))


@router.put("/{deployed_model}/scale")
async def scale(deployed_model: str, request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    body = await json_body(request)
    dep = await run_in_threadpool(deployments.scale, rt, who, deployed_model, body.get("capacity"))
    _wake_serving(request)
    return ok(deployment_view(dep, rt.settings.data_dir))


@router.delete("/{deployed_model}")
def delete(deployed_model: str, request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    deployments.delete(rt, who, deployed_model)
    _wake_serving(request)
    return ok({"status": "success"})


def _wake_serving(request: Request) -> None:
    """Let the serving supervisor act now instead of at its next tick."""
    if request.app.state.serving is not None:
        request.app.state.serving.wake()


@router.get("/{deployed_model}/stream")
async def stream(deployed_model: str, who: Caller, rt: RuntimeDep) -> EventSourceResponse:
    await run_in_threadpool(deployments.get, rt, who, deployed_model)  # 404 before the stream
    return EventSourceResponse(_events(rt, who, deployed_model), ping=15)


async def _events(rt: Runtime, who: Principal, name: str) -> AsyncIterator[DashScopeEvent]:
    """The deployment object on every change, until it is settled: RUNNING at full
    capacity, or FAILED. A deployment that disappears ends the stream with a NotFound."""
    rid = request_id()
    last: dict[str, Any] | None = None
    frame = 0
    while True:
        try:
            dep = await run_in_threadpool(deployments.get, rt, who, name)
        except DashtuneError as exc:
            yield error_event(
                exc.code, exc.message, rid, exc.status, id=frame + 1, data_dir=rt.settings.data_dir
            )
            return
        view = deployment_view(dep, rt.settings.data_dir)
        if view != last:
            last, frame = view, frame + 1
            yield DashScopeEvent({"type": "status", **view, "request_id": rid}, id=frame)
        running = dep.status == S.RUNNING.value and dep.ready_capacity == dep.capacity
        if running or dep.status == S.FAILED.value:
            return
        await asyncio.sleep(STREAM_POLL_SECONDS)
