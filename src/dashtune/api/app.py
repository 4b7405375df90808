"""The FastAPI application: routers, envelope handlers, and the scheduler's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from dashtune import __version__
from dashtune.api import compat, deployments, files, fine_tunes, generation, metrics, models
from dashtune.api.access_log import AccessLogMiddleware
from dashtune.api.envelope import RequestIdMiddleware, install_handlers, ok
from dashtune.console import router as console
from dashtune.scheduler.loop import Scheduler
from dashtune.services.runtime import Runtime
from dashtune.serving.supervisor import Supervisor


def create_app(rt: Runtime, *, start_scheduler: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.blobs.sweep()
        scheduler = Scheduler(rt) if start_scheduler else None
        if scheduler:
            scheduler.start()
        app.state.serving = Supervisor(rt) if rt.settings.serving else None
        if app.state.serving:
            app.state.serving.start()
        try:
            yield
        finally:
            if scheduler:
                scheduler.stop()
            if app.state.serving:
                await app.state.serving.stop()

    app = FastAPI(title="dashtune", version=__version__, lifespan=lifespan, docs_url="/docs")
    app.state.runtime = rt
    app.state.serving = None  # the serving Supervisor while the app runs with serving on
    install_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    requests, seconds = metrics.install(app, rt)
    app.add_middleware(AccessLogMiddleware, requests=requests, seconds=seconds)
    console.install(app)
    app.include_router(files.router)
    app.include_router(fine_tunes.router)
    app.include_router(deployments.router)
    app.include_router(generation.router)
    app.include_router(compat.router)
    app.include_router(models.router)

    @app.get("/health")
    def health() -> JSONResponse:
        return ok({"status": "ok", "version": __version__})

    return app
