"""Serves the console: `/console` (the single page) and `/console/static/*` (its assets)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from dashtune.console.headers import SecurityHeadersMiddleware

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/console/")
def index() -> FileResponse:
    # Always revalidated: the page names the asset files, so it must never be stale.
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/console")
def index_slash() -> RedirectResponse:
    # The page's relative asset URLs resolve against /console/.
    return RedirectResponse("/console/")


def install(app: FastAPI) -> None:
    """Add the console's routes, static files and security headers to `app`."""
    app.add_middleware(SecurityHeadersMiddleware)
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
