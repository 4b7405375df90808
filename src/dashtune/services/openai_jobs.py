"""The OpenAI fine-tuning API's use cases, on the same jobs as the DashScope API.

Creating goes through `services.jobs.create` (same validation, tenancy and quota) and
adds the `openai_jobs` row in the same transaction; reading, canceling and deleting are
`services.jobs`' own. What is new here is cursor paging and the metadata filter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from dashtune.domain import hyperparams, openai_shapes
from dashtune.domain.errors import InvalidParameter, NotFound
from dashtune.services import jobs
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Job, JobLog, OpenAIJob, StoredFile

MAX_LIMIT = 100


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool


def _limit(value: int | None, default: int = 20, cap: int = MAX_LIMIT) -> int:
    if value is None:
        return default
    if not 1 <= value <= cap:
        raise InvalidParameter(f"limit must be between 1 and {cap}, got {value}.")
    return value


def create(rt: Runtime, who: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """A job from OpenAI's create body; answered in OpenAI's shape."""
    for key in ("training_file", "model"):
        if not isinstance(body.get(key), str) or not body[key].strip():
            raise InvalidParameter(f"Missing {key}: a non-empty string.")
    method = openai_shapes.parse_method(
        body.get("method"), body.get("hyperparameters"), body.get("training_type")
    )
    base_lr = hyperparams.resolve({}, method.training_type)["learning_rate"]
    mapped = openai_shapes.dashtune_hyperparameters(method.declared, body.get("seed"), base_lr)
    metadata = openai_shapes.check_metadata(body.get("metadata"))
    suffix = body.get("suffix")
    if suffix is not None and (not isinstance(suffix, str) or len(suffix) > 64):
        raise InvalidParameter("suffix must be a string of at most 64 characters.")
    validation = body.get("validation_file")
    extra = OpenAIJob(
        job_id="",
        method=method.type,
        hyperparameters=method.declared,
        job_metadata=metadata,
        suffix=suffix or None,
    )

    def add_extra(s: Any, job: Job) -> None:
        extra.job_id = job.id
        s.add(extra)

    req = jobs.CreateJob(
        model=body["model"],
        training_file_ids=[body["training_file"]],
        validation_file_ids=[validation] if validation else None,
        training_type=method.training_type.value,
        hyper_parameters=mapped,
        finetuned_output_suffix=suffix or None,
    )
    job = jobs.create(rt, who, req, on_create=add_extra)
    return openai_shapes.job_object(job, extra, rt.settings.data_dir)


def _extra(rt: Runtime, job_id: str) -> OpenAIJob | None:
    with rt.db.read() as s:
        return s.get(OpenAIJob, job_id)


def retrieve(rt: Runtime, who: Principal, job_id: str) -> dict[str, Any]:
    job = jobs.get(rt, who, job_id)
    return openai_shapes.job_object(job, _extra(rt, job_id), rt.settings.data_dir)


def cancel(rt: Runtime, who: Principal, job_id: str) -> dict[str, Any]:
    job = jobs.cancel(rt, who, job_id)
    return openai_shapes.job_object(job, _extra(rt, job_id), rt.settings.data_dir)


def pause_or_resume(rt: Runtime, who: Principal, job_id: str, action: str) -> dict[str, Any]:
    """OpenAI's pause/resume: the same use cases as the native routes (`services.jobs`)."""
    job = jobs.pause(rt, who, job_id) if action == "pause" else jobs.resume(rt, who, job_id)
    return openai_shapes.job_object(job, _extra(rt, job_id), rt.settings.data_dir)


def _matches(extra: OpenAIJob | None, wanted: dict[str, str]) -> bool:
    have = (extra.job_metadata if extra else None) or {}
    return all(have.get(k) == v for k, v in wanted.items())


def page(
    rt: Runtime, who: Principal, after: str | None, limit: int | None, metadata: dict[str, str]
) -> Page:
    """Newest first; `after` is the last job id of the previous page."""
    n = _limit(limit)
    with rt.db.read() as s:
        cond = Job.workspace_id == who.workspace_id
        if after:
            rank = s.scalar(select(Job.rank).where(cond, Job.id == after))
            if rank is None:
                raise InvalidParameter(f"after: job '{after}' not found.")
            cond = cond & (Job.rank < rank)
        q = (
            select(Job, OpenAIJob)
            .outerjoin(OpenAIJob, OpenAIJob.job_id == Job.id)
            .where(cond)
            .order_by(Job.rank.desc())
        )
        found: list[tuple[Job, OpenAIJob | None]] = []
        # Metadata lives in a JSON column: filter while streaming rank order, stop when full.
        for job, extra in s.execute(q.execution_options(yield_per=500)):
            if _matches(extra, metadata):
                found.append((job, extra))
                if len(found) > n:
                    break
    data = [openai_shapes.job_object(j, e, rt.settings.data_dir) for j, e in found[:n]]
    return Page(data, len(found) > n)


def events(rt: Runtime, who: Principal, job_id: str, after: str | None, limit: int | None) -> Page:
    """The job's log lines, state changes included, newest first."""
    jobs.get(rt, who, job_id)
    n = _limit(limit)
    with rt.db.read() as s:
        q = select(JobLog).where(JobLog.job_id == job_id)
        if after:
            q = q.where(JobLog.seq < openai_shapes.event_seq(job_id, after))
        rows = s.scalars(q.order_by(JobLog.seq.desc()).limit(n + 1)).all()
    return Page(
        [openai_shapes.event_object(r, rt.settings.data_dir) for r in rows[:n]], len(rows) > n
    )


def checkpoints(
    rt: Runtime, who: Principal, job_id: str, after: str | None, limit: int | None
) -> Page:
    """Newest (highest step) first."""
    rows = list(reversed(jobs.checkpoints(rt, who, job_id)))
    if after:
        ids = [openai_shapes.checkpoint_id(c.job_id, c.name) for c in rows]
        if after not in ids:
            raise InvalidParameter(f"after: '{after}' is not a checkpoint of job {job_id}.")
        rows = rows[ids.index(after) + 1 :]
    n = _limit(limit, default=10)
    return Page([openai_shapes.checkpoint_object(c) for c in rows[:n]], len(rows) > n)


def files_page(
    rt: Runtime,
    who: Principal,
    after: str | None,
    limit: int | None,
    order: str,
    purpose: str | None,
) -> Page:
    """The workspace's files by creation time (`order` asc|desc), after a file id."""
    if order not in ("asc", "desc"):
        raise InvalidParameter("order must be 'asc' or 'desc'.")
    n = _limit(limit, default=10_000, cap=10_000)
    desc = order == "desc"
    with rt.db.read() as s:
        cond = StoredFile.workspace_id == who.workspace_id
        if purpose:
            cond = cond & (StoredFile.purpose == purpose)
        if after:
            ref = s.get(StoredFile, after)
            if ref is None or ref.workspace_id != who.workspace_id:
                raise NotFound(f"after: file '{after}' not found.")
            key = (ref.created_at, ref.id)
            if desc:
                cond = cond & (
                    (StoredFile.created_at < key[0])
                    | ((StoredFile.created_at == key[0]) & (StoredFile.id < key[1]))
                )
            else:
                cond = cond & (
                    (StoredFile.created_at > key[0])
                    | ((StoredFile.created_at == key[0]) & (StoredFile.id > key[1]))
                )
        columns = (StoredFile.created_at, StoredFile.id)
        ordering = [c.desc() for c in columns] if desc else list(columns)
        rows = s.scalars(select(StoredFile).where(cond).order_by(*ordering).limit(n + 1)).all()
    return Page([openai_shapes.file_object(f) for f in rows[:n]], len(rows) > n)
