"""The auth dependency: every route but /health needs a valid key."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.concurrency import run_in_threadpool

from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal, authenticate


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def principal(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_dashscope_workspace: Annotated[str | None, Header(alias="X-DashScope-WorkSpace")] = None,
) -> Principal:
    rt = runtime(request)
    return await run_in_threadpool(authenticate, rt, authorization, x_dashscope_workspace)


Caller = Annotated[Principal, Depends(principal)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
