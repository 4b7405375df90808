"""Upload, list, read and delete training files (§2)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import func, select

from dashtune.domain import ids
from dashtune.domain.datasets import DatasetError, iter_objects
from dashtune.domain.errors import InvalidParameter, NotFound, UnsupportedOperation
from dashtune.domain.states import TERMINAL
from dashtune.services.runtime import Runtime, utcnow
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Job, StoredFile

PURPOSES = {"fine-tune": "fine-tune", "fine_tune": "fine-tune"}


def normalise_purpose(purpose: str | None) -> str:
    if purpose is None or purpose == "":
        return "fine-tune"
    normal = PURPOSES.get(purpose.strip().lower())
    if normal is None:
        raise InvalidParameter(f"purpose '{purpose}' is not supported; use 'fine-tune'.")
    return normal


def upload(
    rt: Runtime,
    who: Principal,
    name: str,
    source: BinaryIO,
    description: str = "",
    purpose: str | None = None,
) -> StoredFile:
    """Store one JSONL file. Nothing is kept unless the whole file is valid."""
    purpose = normalise_purpose(purpose)
    if not name.lower().endswith(".jsonl"):
        raise InvalidParameter(f"File '{name}': only .jsonl files are accepted for fine-tuning.")
    file_id = ids.new_file_id()
    tmp, size, md5 = rt.blobs.stage(file_id, source, rt.settings.max_upload_bytes)
    try:
        if size == 0:
            raise InvalidParameter(f"File '{name}' is empty.")
        with open(tmp, "rb") as f:
            lines = sum(1 for _ in iter_objects(f))
        if lines == 0:
            raise InvalidParameter(f"File '{name}' has no JSON lines.")
    except DatasetError as exc:
        rt.blobs.discard(tmp)
        raise InvalidParameter(f"File '{name}' {exc}; nothing was stored.") from None
    except BaseException:
        rt.blobs.discard(tmp)
        raise
    row = StoredFile(
        id=file_id,
        workspace_id=who.workspace_id,
        user_id=who.user_id,
        name=name,
        description=description or "",
        purpose=purpose,
        size=size,
        md5=md5,
        lines=lines,
        blob=file_id,
        created_at=utcnow(),
    )
    # Publish the bytes first: a row never points at a missing blob. A crash between
    # the two leaves an unlisted blob, never a listed half file.
    rt.blobs.commit(tmp)
    try:
        with rt.db.write() as s:
            s.add(row)
    except BaseException:
        rt.blobs.delete(file_id)
        raise
    return row


def get(rt: Runtime, who: Principal, file_id: str) -> StoredFile:
    with rt.db.read() as s:
        row = s.get(StoredFile, file_id)
    if row is None or row.workspace_id != who.workspace_id:
        raise NotFound(f"File '{file_id}' not found.")
    return row


def page(rt: Runtime, who: Principal, page_no: int, page_size: int) -> tuple[list[StoredFile], int]:
    """Newest first."""
    with rt.db.read() as s:
        total = s.scalar(
            select(func.count())
            .select_from(StoredFile)
            .where(StoredFile.workspace_id == who.workspace_id)
        )
        rows = s.scalars(
            select(StoredFile)
            .where(StoredFile.workspace_id == who.workspace_id)
            .order_by(StoredFile.created_at.desc(), StoredFile.id.desc())
            .offset((page_no - 1) * page_size)
            .limit(page_size)
        ).all()
    return list(rows), int(total or 0)


def delete(rt: Runtime, who: Principal, file_id: str) -> None:
    """Remove the row and the bytes; refused while a running job still reads the file."""
    with rt.db.write() as s:
        row = s.get(StoredFile, file_id)
        if row is None or row.workspace_id != who.workspace_id:
            raise NotFound(f"File '{file_id}' not found.")
        active = s.scalars(
            select(Job).where(
                Job.workspace_id == who.workspace_id, Job.status.not_in([str(t) for t in TERMINAL])
            )
        ).all()
        users = [j.id for j in active if file_id in (j.training_file_ids + j.validation_file_ids)]
        if users:
            raise UnsupportedOperation(
                f"File '{file_id}' is used by fine-tune job {users[0]}, which has not ended; "
                "cancel the job or wait for it to end before deleting the file."
            )
        s.delete(row)
    rt.blobs.delete(row.blob)


def content(rt: Runtime, who: Principal, file_id: str) -> Iterator[bytes]:
    """The stored bytes; opened here so a lost blob fails before a response starts."""
    row = get(rt, who, file_id)
    handle = rt.blobs.open(row.blob)

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(1 << 16):
                yield chunk

    return chunks()
