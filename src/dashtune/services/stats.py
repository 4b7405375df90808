"""Read-only figures about all jobs for the operator's metrics (`GET /metrics`).

Unlike the other services these are not scoped to a caller: they count every
workspace, and say nothing about any one job beyond its state, type and timing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select

from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job


@dataclass(frozen=True)
class EndedJob:
    id: str
    status: str
    training_type: str
    end_time: datetime
    # Seconds from the worker's start to the end; None for a job that never ran.
    run_seconds: float | None
    usage: int


def jobs_by_status(rt: Runtime) -> dict[str, int]:
    """How many jobs are in each status right now."""
    with rt.db.read() as s:
        rows = s.execute(select(Job.status, func.count()).group_by(Job.status)).all()
    return {status: int(n) for status, n in rows}


def ended_since(rt: Runtime, since: datetime) -> list[EndedJob]:
    """Jobs whose `end_time` is at or after `since` (and that still exist)."""
    with rt.db.read() as s:
        rows = s.execute(
            select(
                Job.id, Job.status, Job.training_type, Job.start_time, Job.end_time, Job.usage
            ).where(Job.end_time >= since)
        ).all()
    return [
        EndedJob(
            id=r.id,
            status=r.status,
            training_type=r.training_type,
            end_time=r.end_time,
            run_seconds=(r.end_time - r.start_time).total_seconds() if r.start_time else None,
            usage=int(r.usage or 0),
        )
        for r in rows
    ]
