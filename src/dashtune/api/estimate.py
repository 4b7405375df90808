"""POST /api/v1/fine-tunes/estimate (extension): the create body in, an estimate out,
nothing queued."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import json_body, ok
from dashtune.services import estimate

router = APIRouter(prefix="/api/v1/fine-tunes", tags=["fine-tunes"])


@router.post("/estimate")
async def estimate_job(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    body = await json_body(request)
    return ok(await run_in_threadpool(estimate.estimate, rt, who, body))
