"""The auth dependency: every route but /health needs a valid key.

Both dependencies are coroutines: FastAPI runs a plain `def` dependency in the thread
pool, a hop per request for what is an attribute read. A key seen less than
DASHTUNE_AUTH_CACHE_SECONDS ago is answered from the process's `PrincipalCache` on the
event loop; only a miss reads the database, in the thread pool.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from dashtune.domain.ids import hash_api_key
from dashtune.services.principal_cache import PrincipalCache
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal, bearer_key, principal_for


def app_runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def runtime(request: Request) -> Runtime:
    return app_runtime(request)


async def principal(request: Request) -> Principal:
    # The two headers are read off the request, not declared as FastAPI `Header`
    # parameters: each declared parameter is validated by pydantic on every request, a
    # sizeable share of a cached request's cost for two plain strings. api/openapi.py
    # documents X-DashScope-WorkSpace (and the bearer scheme) on every keyed route.
    headers = request.headers
    key_hash = hash_api_key(bearer_key(headers.get("authorization")))
    workspace = headers.get("x-dashscope-workspace")
    cache: PrincipalCache = request.app.state.principals
    who = cache.get(key_hash, workspace)
    if who is None:
        read_at = time.monotonic()
        rt = app_runtime(request)
        who = await run_in_threadpool(principal_for, rt, key_hash, workspace)
        cache.put(key_hash, workspace, who, read_at)
    return who


Caller = Annotated[Principal, Depends(principal)]
RuntimeDep = Annotated[Runtime, Depends(runtime)]
