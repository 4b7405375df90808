"""OpenAI's Files API under /compatible-mode/v1 (`client.files` of the `openai` SDK).

The same files as /api/v1/files: one upload path (services.files), OpenAI's shapes.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.compat import OpenAIRoute
from dashtune.api.files import stager
from dashtune.api.multipart import read_upload
from dashtune.domain import openai_shapes
from dashtune.domain.errors import InvalidParameter, UnsupportedMediaType
from dashtune.services import files, openai_jobs

router = APIRouter(prefix="/compatible-mode/v1/files", tags=["openai"], route_class=OpenAIRoute)


@router.post("")
async def create(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """Streamed like /api/v1/files (api/multipart.py): counted, staged in the data dir."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise UnsupportedMediaType("Upload the file as multipart/form-data in a part named 'file'.")
    limit = rt.settings.max_upload_bytes
    form = await read_upload(request, stager(rt), limit, 1, file_field="file")
    try:
        if not form.files:
            raise InvalidParameter("Missing file: send it in a multipart part named 'file'.")
        purposes = form.fields.get("purpose", [])
        purpose = purposes[0] if purposes else None
        if purpose != "fine-tune":
            raise InvalidParameter(f"purpose {purpose!r} is not supported; use 'fine-tune'.")
        part = form.files[0]
        assert part.staged is not None
        staged = await run_in_threadpool(
            files.check_staged, rt, who, part.file_id, part.staged, part.filename, "", purpose
        )
        [row] = await run_in_threadpool(files.publish, rt, [staged])
    except BaseException:
        form.discard()
        raise
    return JSONResponse(openai_shapes.file_object(row))


@router.get("")
def list_files(
    who: Caller,
    rt: RuntimeDep,
    after: str | None = None,
    limit: Annotated[int | None, Query()] = None,
    order: str = "desc",
    purpose: str | None = None,
) -> JSONResponse:
    page = openai_jobs.files_page(rt, who, after, limit, order, purpose)
    return JSONResponse({"object": "list", "data": page.data, "has_more": page.has_more})


@router.get("/{file_id}")
def retrieve(file_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return JSONResponse(openai_shapes.file_object(files.get(rt, who, file_id)))


@router.delete("/{file_id}")
def delete(file_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    files.delete(rt, who, file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


@router.get("/{file_id}/content")
def content(file_id: str, who: Caller, rt: RuntimeDep) -> StreamingResponse:
    return StreamingResponse(files.content(rt, who, file_id), media_type="application/jsonl")
