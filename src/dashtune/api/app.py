"""The FastAPI application: routers, envelope handlers, and the scheduler's lifetime."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from dashtune import __version__
from dashtune.api import (
    compat,
    deployments,
    estimate,
    files,
    fine_tunes,
    generation,
    metrics,
    models,
    openai_files,
    openai_fine_tuning,
    webhooks,
)
from dashtune.api.access_log import AccessLog, AccessLogMiddleware
from dashtune.api.envelope import RequestIdMiddleware, install_handlers, ok
from dashtune.api.fast_reads import FastReads
from dashtune.api.job_feed import JobFeed
from dashtune.api.openapi import install_openapi
from dashtune.api.url_guard import UrlGuardMiddleware
from dashtune.console import router as console
from dashtune.scheduler.loop import Scheduler
from dashtune.services.principal_cache import PrincipalCache
from dashtune.services.runtime import Runtime
from dashtune.serving.supervisor import Supervisor
from dashtune.store.driver_reads import driver_reads
from dashtune.store.sweep import sweep


def create_app(rt: Runtime, *, start_scheduler: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweep(rt.settings, rt.db, rt.blobs)
        scheduler = Scheduler(rt) if start_scheduler and rt.settings.scheduler else None
        if scheduler:
            scheduler.start()
        app.state.serving = Supervisor(rt) if rt.settings.serving else None
        if app.state.serving:
            app.state.serving.start()
        lower_priority(rt.settings.api_nice)
        try:
            yield
        finally:
            await app.state.job_feed.stop()
            await app.state.driver_reads.close()
            if scheduler:
                scheduler.stop()
            if app.state.serving:
                await app.state.serving.stop()

    # No /docs: FastAPI's Swagger UI loads from a CDN (breaks offline, and would be a
    # third-party script beside the console); /openapi.json stays.
    app = DashtuneApp(
        title="dashtune", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.runtime = rt
    app.state.serving = None  # the serving Supervisor while the app runs with serving on
    app.state.job_feed = JobFeed(rt, tail=rt.settings.stream_tail_lines)
    app.state.principals = PrincipalCache(rt.settings.auth_cache_seconds)
    app.state.driver_reads = driver_reads(rt.db)  # the fast reads' own connections
    install_handlers(app)
    # Each add_middleware wraps the ones before: console headers (console.install) outside
    # the access log, outside the request id (which renders errors), outside the URL guard.
    app.add_middleware(UrlGuardMiddleware)
    app.add_middleware(RequestIdMiddleware)
    instruments = metrics.install(app, rt)
    access = AccessLog(instruments.requests, instruments.seconds)
    app.add_middleware(AccessLogMiddleware, access=access)
    console.install(app)
    app.fast_reads = FastReads(
        partial(FastAPI.__call__, app),
        rt=rt,
        reads=app.state.driver_reads,
        principals=app.state.principals,
        access=access,
        metrics=instruments,
    )
    app.include_router(estimate.router)  # before fine_tunes: /fine-tunes/estimate
    app.include_router(files.router)
    app.include_router(fine_tunes.router)
    app.include_router(deployments.router)
    app.include_router(generation.router)
    app.include_router(compat.router)
    app.include_router(models.router)
    app.include_router(openai_files.router)
    app.include_router(openai_fine_tuning.router)
    app.include_router(webhooks.router)
    install_openapi(app)

    @app.get("/health")
    def health() -> JSONResponse:
        return ok({"status": "ok", "version": __version__})

    return app


class DashtuneApp(FastAPI):
    """FastAPI behind `api.fast_reads`: the two hot job reads it answers skip FastAPI's
    whole stack, its own error, body-limit and telemetry layers included (about 6% of
    such a request's CPU); everything else goes through unchanged."""

    fast_reads: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.fast_reads is None:
            await super().__call__(scope, receive, send)
        else:
            await self.fast_reads(scope, receive, send)


def lower_priority(nice: int) -> None:
    """Renice this thread, the event loop, by `nice`: request handling and the threads it
    starts from now on yield the CPU to training workers. Threads started before (the
    scheduler, which starts workers, and the serving supervisor) keep their priority:
    Linux keeps a nice value per thread and a child inherits its creator's."""
    if nice > 0 and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
