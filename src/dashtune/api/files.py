"""Files routes (§2). Bodies use `data`, as the real service does."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import ok
from dashtune.api.paging import PageNo, PageSize
from dashtune.api.views import file_view
from dashtune.domain.errors import InvalidParameter, RequestTooLarge, UnsupportedMediaType
from dashtune.services import files

router = APIRouter(prefix="/api/v1/files", tags=["files"])

MULTIPART_OVERHEAD = 1 << 20


@router.post("")
async def upload(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    limit = rt.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + MULTIPART_OVERHEAD:
        raise RequestTooLarge(f"The upload is {length} bytes; the limit is {limit} bytes per file.")
    if "multipart/form-data" not in request.headers.get("content-type", ""):
        raise UnsupportedMediaType("Upload files as multipart/form-data with a part named 'files'.")
    form = await request.form(max_files=100, max_fields=200)
    try:
        parts = [p for p in form.getlist("files") if isinstance(p, UploadFile)]
        if not parts:
            raise InvalidParameter("Missing file: send the file in a multipart part named 'files'.")
        descriptions = [str(d) for d in form.getlist("descriptions")]
        purpose = form.get("purpose")
        uploaded: list[dict[str, str]] = []
        try:
            for i, part in enumerate(parts):
                row = await run_in_threadpool(
                    files.upload,
                    rt,
                    who,
                    part.filename or "upload.jsonl",
                    part.file,
                    descriptions[i] if i < len(descriptions) else "",
                    str(purpose) if purpose is not None else None,
                )
                uploaded.append({"file_id": row.id, "name": row.name})
        except BaseException:
            # One request, one outcome: a rejected part un-stores the parts before it.
            for done in uploaded:
                await run_in_threadpool(files.delete, rt, who, done["file_id"])
            raise
    finally:
        await form.close()
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
