"""The job API's hot read paths (`GET /fine-tunes/{id}`, the list) on Core rows.

The ORM cost more than the query here: building a statement per call, a Session, and
hydrating a `Job` (with six JSON columns) per row took 1.1 ms for a page of 10 on SQLite;
prebuilt statements on a bare connection, returning rows that carry the same attribute
names as `Job`, take about a quarter of that. Writes and everything else stay on the ORM.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, bindparam, select

from dashtune.domain.errors import NotFound
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Job, ModelJobCount, Workspace

JobRow = Row[Any]  # a `jobs` row: reads like a `Job` (same attribute names), detached

JOBS = Job.__table__
# Built once: SQLAlchemy caches their compiled form, so a call only binds values.
ONE = select(JOBS).where(JOBS.c.id == bindparam("job_id"))
COUNT = select(Workspace.job_count).where(Workspace.id == bindparam("ws"))
MODEL_COUNT = select(ModelJobCount.job_count).where(
    ModelJobCount.workspace_id == bindparam("ws"), ModelJobCount.base_model == bindparam("model")
)
PAGE = (
    select(JOBS)
    .where(
        JOBS.c.workspace_id == bindparam("ws"),
        JOBS.c.rank.between(bindparam("lo"), bindparam("hi")),
    )
    .order_by(JOBS.c.rank.desc())
)
MODEL_PAGE = (
    select(JOBS)
    .where(
        JOBS.c.workspace_id == bindparam("ws"),
        JOBS.c.base_model == bindparam("model"),
        JOBS.c.model_rank.between(bindparam("lo"), bindparam("hi")),
    )
    .order_by(JOBS.c.model_rank.desc())
)


def get(rt: Runtime, who: Principal, job_id: str) -> JobRow:
    """The caller's job `job_id`, or NotFound (another workspace's job is not found either)."""
    with rt.db.read_rows() as conn:
        row = conn.execute(ONE, {"job_id": job_id}).first()
    if row is None or row.workspace_id != who.workspace_id:
        raise NotFound(f"Fine-tune job '{job_id}' not found.")
    return row


def page(
    rt: Runtime, who: Principal, page_no: int, page_size: int, model: str | None = None
) -> tuple[list[JobRow], int]:
    """Newest first. A page is a range of `rank` (or, filtered by base model, of
    `model_rank`) and its total one row: the cost is independent of page_no."""
    ws = who.workspace_id
    with rt.db.read_rows() as conn:
        if not model:
            total = int(conn.execute(COUNT, {"ws": ws}).scalar() or 0)
            stmt, params = PAGE, {"ws": ws}
        else:
            # `model` filters by base model (§3.4), on the (workspace, base_model, model_rank) index.
            params = {"ws": ws, "model": model}
            total = int(conn.execute(MODEL_COUNT, params).scalar() or 0)
            stmt = MODEL_PAGE
        hi = total - (page_no - 1) * page_size
        rows = conn.execute(stmt, {**params, "lo": hi - page_size + 1, "hi": hi}).all()
    return list(rows), total
