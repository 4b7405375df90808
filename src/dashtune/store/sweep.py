"""Reconciling the data directory with the database after a crash (run at start-up).

Every multi-step change is ordered so that a crash between its steps leaves only
something unlisted on disk, never a row pointing at nothing:

- uploads publish their blobs, then insert every row of the request in one transaction;
- deletes remove rows first, then rename the job's directories into `trash/` and remove
  them from there;
- exports copy into `<name>.part`, rename, then register the model.

So the sweep only removes: the trash, staged `*.part` blobs, blobs no file row names
(older than `sweep_grace_seconds`, so an upload in flight in another server sharing the
directory keeps its blob), and job or model directories of jobs that have no row.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from dashtune.config import Settings
from dashtune.domain.ids import JOB_ID_PATTERN
from dashtune.store.blobs import BlobStore
from dashtune.store.db import Database
from dashtune.store.tables import Job, StoredFile

log = logging.getLogger("dashtune.store")


@dataclass
class Swept:
    trash: int = 0
    blobs: int = 0
    job_dirs: int = 0

    def __bool__(self) -> bool:
        return bool(self.trash or self.blobs or self.job_dirs)


def discard_tree(settings: Settings, path: Path) -> None:
    """Remove a directory: one rename takes it out of sight, then it is deleted from the
    trash (which the next sweep empties if a crash comes first)."""
    if not path.exists():
        return
    settings.trash_dir.mkdir(parents=True, exist_ok=True)
    target = settings.trash_dir / f"{path.name}-{uuid.uuid4().hex[:8]}"
    try:
        path.rename(target)
    except OSError:
        target = path  # another filesystem: remove in place
    shutil.rmtree(target, ignore_errors=True)


def sweep(settings: Settings, db: Database, blobs: BlobStore) -> Swept:
    """Remove what a crash left on disk that the database does not list."""
    out = Swept()
    if settings.trash_dir.exists():
        for entry in settings.trash_dir.iterdir():
            shutil.rmtree(entry, ignore_errors=True)
            out.trash += 1
    out.blobs += blobs.sweep()
    cutoff = time.time() - settings.sweep_grace_seconds
    on_disk = {p.name: p for p in blobs.root.glob("*/*") if p.is_file()}
    if on_disk:
        with db.read() as s:
            listed = set(s.scalars(select(StoredFile.blob)))
        for key, path in on_disk.items():
            try:
                young = path.stat().st_mtime > cutoff
            except FileNotFoundError:
                continue
            if key not in listed and not young:
                path.unlink(missing_ok=True)
                out.blobs += 1
    # Only directories named for a job: `models/builtin` (the generated tiny model) and
    # anything else an operator keeps there are not a job's artifacts.
    dirs = [
        d
        for root in (settings.jobs_dir, settings.models_dir)
        if root.exists()
        for d in root.iterdir()
        if re.match(JOB_ID_PATTERN, d.name)
    ]
    if dirs:
        with db.read() as s:
            jobs = set(s.scalars(select(Job.id)))
        for d in dirs:
            if d.name not in jobs:
                discard_tree(settings, d)
                out.job_dirs += 1
    if out:
        log.info(
            "start-up sweep removed %d trash entries, %d unlisted blobs, %d orphan job dirs",
            out.trash,
            out.blobs,
            out.job_dirs,
        )
    return out
