"""The FastAPI application: routers, envelope handlers, and the scheduler's lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse

from dashtune import __version__
from dashtune.api import files, fine_tunes
from dashtune.api.envelope import RequestIdMiddleware, install_handlers, ok
from dashtune.scheduler.loop import Scheduler
from dashtune.services.runtime import Runtime


def create_app(rt: Runtime, *, start_scheduler: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt.blobs.sweep()
        scheduler = Scheduler(rt) if start_scheduler else None
        if scheduler:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler:
                scheduler.stop()

    app = FastAPI(title="dashtune", version=__version__, lifespan=lifespan, docs_url="/docs")
    app.state.runtime = rt
    install_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(files.router)
    app.include_router(fine_tunes.router)

    @app.get("/health")
    def health() -> JSONResponse:
        return ok({"status": "ok", "version": __version__})

    return app
