"""The job API's hot read paths (`GET /fine-tunes/{id}`, the list) on Core rows.

The ORM cost more than the query here: building a statement per call, a Session, and
hydrating a `Job` (with six JSON columns) per row took 1.1 ms for a page of 10 on SQLite;
prebuilt statements on a bare connection, returning rows that carry the same attribute
names as `Job`, take about a quarter of that. Writes and everything else stay on the ORM.

The `signed_*` reads go one step further for callers that keep what they rendered of a
job (`api.fast_reads`): they return each job's *signature*, the text of its whole row as
the database spells it, instead of the row. Two reads with the same signature read the
same values in every column, so a rendering made from a row stays right for as long as
the signature does; only a job whose signature is new is read whole (`signed_rows`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    FromClause,
    Row,
    Select,
    bindparam,
    literal_column,
    select,
)

from dashtune.domain.errors import NotFound
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.store.driver_reads import DriverReads
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


def _signature(sqlite: bool) -> ColumnElement[str]:
    """A job row's whole content as one text. PostgreSQL spells a row itself (its float
    output is exact since version 12). On SQLite `json_array` spells every column (text
    escaped, integers exact, null), the reals through `quote()`, which writes them to the
    last bit where JSON would round them to 15 digits. Two rows have the same signature
    only if every column holds the same value."""
    if not sqlite:
        return literal_column("CAST(jobs AS text)")
    spelled = (
        f"quote(jobs.{c.name})" if isinstance(c.type, Float) else f"jobs.{c.name}"
        for c in JOBS.columns
    )
    return literal_column(f"json_array({', '.join(spelled)})")


class _Signed:
    """The signed statements of one dialect, built once. A page and its total are one
    statement: the count row joined to the rank range it implies (a left join, so an
    empty page still brings the total), one round trip instead of two."""

    def __init__(self, sqlite: bool) -> None:
        sig = _signature(sqlite).label("signature")
        self.one = select(JOBS.c.workspace_id, sig).where(JOBS.c.id == bindparam("job_id"))
        self.rows: Select[Any] = select(JOBS, sig).where(
            JOBS.c.id.in_(bindparam("ids", expanding=True))
        )
        ws, counts = Workspace.__table__, ModelJobCount.__table__
        self.page = _page(
            sig, ws, JOBS.c.workspace_id == ws.c.id, JOBS.c.rank, ws.c.id == bindparam("ws")
        )
        self.model_page = _page(
            sig,
            counts,
            (JOBS.c.workspace_id == counts.c.workspace_id)
            & (JOBS.c.base_model == counts.c.base_model),
            JOBS.c.model_rank,
            (counts.c.workspace_id == bindparam("ws"))
            & (counts.c.base_model == bindparam("model")),
        )


def _page(
    sig: ColumnElement[str],
    counts: FromClause,
    match: ColumnElement[bool],
    rank: ColumnElement[int],
    where: ColumnElement[bool],
) -> Select[Any]:
    """(id, signature, total) of the jobs whose `rank` is among the `size` below
    `counts.job_count - skip`, newest first; the one `counts` row `where` picks, with
    NULLs, when that range is empty."""
    hi = counts.c.job_count - bindparam("skip")
    return (
        select(JOBS.c.id, sig, counts.c.job_count.label("total"))
        .select_from(counts.outerjoin(JOBS, match & rank.between(hi - bindparam("size") + 1, hi)))
        .where(where)
        .order_by(rank.desc())
    )


SIGNED = {True: _Signed(True), False: _Signed(False)}


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


async def signed_one(reads: DriverReads, who: Principal, job_id: str) -> str:
    """The signature of the caller's job `job_id`, or NotFound (as `get`)."""
    rows = await reads.rows(SIGNED[reads.sqlite].one, {"job_id": job_id})
    if not rows or rows[0][0] != who.workspace_id:
        raise NotFound(f"Fine-tune job '{job_id}' not found.")
    return str(rows[0][1])


async def signed_page(
    reads: DriverReads, who: Principal, page_no: int, page_size: int, model: str | None = None
) -> tuple[list[tuple[str, str]], int]:
    """`page`, as (job id, signature) pairs newest first, and the total."""
    signed = SIGNED[reads.sqlite]
    params: dict[str, Any] = {
        "ws": who.workspace_id,
        "skip": (page_no - 1) * page_size,
        "size": page_size,
    }
    if model:
        params["model"] = model
    rows = await reads.rows(signed.model_page if model else signed.page, params)
    total = int(rows[0][2] or 0) if rows else 0
    return [(r[0], r[1]) for r in rows if r[0] is not None], total


def signed_rows(rt: Runtime, job_ids: list[str]) -> dict[str, tuple[str, JobRow]]:
    """Job id -> (signature, row) for those of `job_ids` that exist, read together, so
    each signature is that of the row beside it. The caller checked the workspace."""
    with rt.db.read_rows() as conn:
        rows = conn.execute(SIGNED[rt.db.is_sqlite].rows, {"ids": job_ids}).all()
    return {r.id: (r.signature, r) for r in rows}
