"""Upload, list, read and delete training files (§2)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select

from dashtune import crashpoint
from dashtune.domain import ids
from dashtune.domain.datasets import DatasetError, iter_objects
from dashtune.domain.errors import InvalidParameter, NotFound, UnsupportedOperation
from dashtune.domain.json_values import check_text
from dashtune.domain.states import TERMINAL
from dashtune.services.runtime import Runtime, utcnow
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Job, StoredFile

PURPOSES = {"fine-tune": "fine-tune", "fine_tune": "fine-tune"}
MAX_NAME = 500  # the column's length


def normalise_purpose(purpose: str | None) -> str:
    if purpose is None or purpose == "":
        return "fine-tune"
    normal = PURPOSES.get(purpose.strip().lower())
    if normal is None:
        raise InvalidParameter(f"purpose '{purpose}' is not supported; use 'fine-tune'.")
    return normal


@dataclass
class Staged:
    """A validated upload whose bytes wait beside their final place, not yet published."""

    tmp: Path
    row: StoredFile


def check_name(name: str) -> str:
    """A file name that may be stored: `.jsonl`, storable text, within the column."""
    check_text(name, f"File name {name[:80]!a}")
    if len(name) > MAX_NAME:
        raise InvalidParameter(f"File name is {len(name)} characters; the limit is {MAX_NAME}.")
    if not name.lower().endswith(".jsonl"):
        raise InvalidParameter(f"File '{name}': only .jsonl files are accepted for fine-tuning.")
    return name


def stage(
    rt: Runtime,
    who: Principal,
    name: str,
    source: BinaryIO,
    description: str = "",
    purpose: str | None = None,
) -> Staged:
    """Check and stage one JSONL file read from `source`; nothing is listed until `publish`."""
    normalise_purpose(purpose)
    check_name(name)
    file_id = ids.new_file_id()
    staged = rt.blobs.stage(file_id, source, rt.settings.max_upload_bytes)
    return check_staged(rt, who, file_id, staged, name, description, purpose)


def check_staged(
    rt: Runtime,
    who: Principal,
    file_id: str,
    staged: tuple[Path, int, str],
    name: str,
    description: str = "",
    purpose: str | None = None,
) -> Staged:
    """Validate bytes already staged (`BlobStore.stage`/`staged`: temp path, size, md5).

    On any error the staged bytes are removed; nothing is listed until `publish`.
    """
    tmp, size, md5 = staged
    try:
        purpose = normalise_purpose(purpose)
        check_name(name)
        check_text(description or "", "description")
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
    return Staged(tmp, row)


def discard(rt: Runtime, staged: list[Staged]) -> None:
    for one in staged:
        rt.blobs.discard(one.tmp)


def publish(rt: Runtime, staged: list[Staged]) -> list[StoredFile]:
    """List every staged file of one request at once: all of them or none.

    The bytes are published first, so a row never points at a missing blob; a crash
    before the one transaction leaves unlisted blobs, which the start-up sweep removes.
    """
    try:
        for one in staged:
            rt.blobs.commit(one.tmp)
        crashpoint.reach(rt.settings, "upload-after-blob")
        with rt.db.write() as s:
            s.add_all(one.row for one in staged)
    except BaseException:
        discard(rt, staged)
        for one in staged:
            rt.blobs.delete(one.row.blob)
        raise
    return [one.row for one in staged]


def upload(
    rt: Runtime,
    who: Principal,
    name: str,
    source: BinaryIO,
    description: str = "",
    purpose: str | None = None,
) -> StoredFile:
    """Store one JSONL file. Nothing is kept unless the whole file is valid."""
    return publish(rt, [stage(rt, who, name, source, description, purpose)])[0]


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
    # Row first: a crash here leaves an unlisted blob for the start-up sweep.
    crashpoint.reach(rt.settings, "file-delete-after-row")
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
