"""Files routes (§2). Bodies use `data`, as the real service does."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from dashtune import crashpoint
from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import ok
from dashtune.api.multipart import FilePart, read_upload
from dashtune.api.paging import PageNo, PageSize
from dashtune.api.views import file_view
from dashtune.domain import ids
from dashtune.domain.errors import InvalidParameter, UnsupportedMediaType
from dashtune.services import files
from dashtune.services.runtime import Runtime

router = APIRouter(prefix="/api/v1/files", tags=["files"])


def stager(rt: Runtime) -> Callable[[str], FilePart]:
    """Where each file part's bytes go as they arrive: a staged blob under a new file id."""

    def stage(filename: str) -> FilePart:
        name = files.check_name(filename or "upload.jsonl")
        file_id = ids.new_file_id()
        return FilePart(name, file_id, rt.blobs.staged(file_id, rt.settings.max_upload_bytes))

    return stage


@router.post("")
async def upload(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """Stream the parts to staged blobs (api/multipart.py), then validate and publish each."""
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise UnsupportedMediaType("Upload files as multipart/form-data with a part named 'files'.")
    limit = rt.settings.max_upload_bytes
    form = await read_upload(request, stager(rt), limit, rt.settings.max_upload_files)
    staged: list[files.Staged] = []
    try:
        if not form.files:
            raise InvalidParameter("Missing file: send the file in a multipart part named 'files'.")
        descriptions = form.fields.get("descriptions", [])
        purposes = form.fields.get("purpose", [])
        purpose = purposes[0] if purposes else None
        for i, part in enumerate(form.files):
            assert part.staged is not None
            staged.append(
                await run_in_threadpool(
                    files.check_staged,
                    rt,
                    who,
                    part.file_id,
                    part.staged,
                    part.filename,
                    descriptions[i] if i < len(descriptions) else "",
                    purpose,
                )
            )
            if len(form.files) > 1:
                crashpoint.reach(rt.settings, "upload-mid-request")
        # One request, one outcome: every part is listed in one transaction, or none.
        rows = await run_in_threadpool(files.publish, rt, staged)
    except BaseException:
        form.discard()
        files.discard(rt, staged)
        raise
    uploaded = [{"file_id": row.id, "name": row.name} for row in rows]
    return ok({"uploaded_files": uploaded, "failed_uploads": []}, key="data")


@router.get("")
def list_files(
    who: Caller, rt: RuntimeDep, page_no: PageNo = 1, page_size: PageSize = 10
) -> JSONResponse:
    rows, total = files.page(rt, who, page_no, page_size)
    return ok(
        {
            "files": [file_view(f) for f in rows],
            "total": total,
            "page_no": page_no,
            "page_size": page_size,
        },
        key="data",
    )


@router.get("/{file_id}")
def get_file(file_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok(file_view(files.get(rt, who, file_id)), key="data")


@router.get("/{file_id}/content")
def file_content(file_id: str, who: Caller, rt: RuntimeDep) -> StreamingResponse:
    return StreamingResponse(files.content(rt, who, file_id), media_type="application/jsonl")


@router.delete("/{file_id}")
def delete_file(file_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    files.delete(rt, who, file_id)
    return ok({"deleted": True}, key="data")
