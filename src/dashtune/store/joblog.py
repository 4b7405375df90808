"""Appending log lines with dense 1-based sequence numbers (logs pages by `seq`)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from dashtune.domain.clock import utcnow
from dashtune.store.tables import Job, JobLog


def append_lines(s: Session, job_id: str, lines: list[str]) -> int:
    """Add `lines` inside the caller's transaction; returns the new line count.

    The count is bumped with one UPDATE ... RETURNING, which row-locks the job on
    PostgreSQL and is serialised on SQLite, so concurrent writers never share a seq.
    """
    if not lines:
        return 0
    new_count = s.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(log_count=Job.log_count + len(lines))
        .returning(Job.log_count)
    ).scalar_one()
    first = new_count - len(lines) + 1
    now = utcnow()
    s.add_all(
        JobLog(job_id=job_id, seq=first + i, line=line, created_at=now)
        for i, line in enumerate(lines)
    )
    return int(new_count)
