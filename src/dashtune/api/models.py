"""`GET /api/v1/models`: what the 2.x client's `client.models.list/get` read."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import ok
from dashtune.api.paging import PageNo, PageSize
from dashtune.services import models

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("")
def list_models(
    who: Caller,
    rt: RuntimeDep,
    page_no: PageNo = 1,
    page_size: PageSize = 10,
    model: str | None = None,
) -> JSONResponse:
    items = models.listing(rt, who, model)
    start = (page_no - 1) * page_size
    return ok(
        {
            "models": items[start : start + page_size],
            "total": len(items),
            "page_no": page_no,
            "page_size": page_size,
        }
    )
