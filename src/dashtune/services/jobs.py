"""Fine-tune job use cases for callers (§3): create, read, list, cancel, pause, resume,
delete, logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from dashtune import crashpoint
from dashtune.domain import hyperparams, ids
from dashtune.domain.errors import (
    Conflict,
    InvalidParameter,
    NotFound,
    Throttling,
    UnsupportedOperation,
)
from dashtune.domain.json_values import check_json_value, check_text
from dashtune.domain.states import QUOTA_STATES, Action, JobStatus, transition
from dashtune.domain.training import LORA_TYPES, TrainingType, parse_training_type
from dashtune.services import capacity, wakeup
from dashtune.services.runtime import Runtime, utcnow
from dashtune.services.tenancy import Principal
from dashtune.store import resume_points
from dashtune.store.joblog import append_lines
from dashtune.store.sweep import discard_tree
from dashtune.store.tables import (
    Checkpoint,
    Deployment,
    Job,
    JobLog,
    JobMetric,
    Model,
    ModelJobCount,
    OpenAIJob,
    StoredFile,
    Workspace,
)

MAX_LOG_LINES = 1000
# Log lines are numbered in a 32-bit column: an offset past it reads nothing anyway.
MAX_LOG_OFFSET = 2**31 - 1
# Model names are stored in 300-character columns, and a checkpoint's name is the job's
# model name plus `-checkpoint-{step}`: leave room for that suffix.
MAX_MODEL_NAME = 256


@dataclass
class CreateJob:
    """A create request as parsed off the wire; the service validates the values."""

    model: Any = None
    training_file_ids: Any = None
    validation_file_ids: Any = None
    training_type: Any = None
    hyper_parameters: Any = None
    finetuned_output_suffix: Any = None
    model_name: Any = None
    job_name: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _optional_str(value: Any, name: str, limit: int = 200) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidParameter(f"{name} must be a string of at most {limit} characters.")
    return check_text(value.strip(), name)


def resolve_hyper_parameters(
    rt: Runtime, model: str, training_type: TrainingType, declared: Any
) -> dict[str, Any]:
    """What a job on `model` trains with: the schema's defaults, the catalog's for the model,
    the caller's, and the executor's GPUs (400 if the job could never fit)."""
    entry = rt.catalog.entries.get(model)
    resolved = hyperparams.resolve(declared, training_type, entry.defaults if entry else None)
    return capacity.fit(rt, resolved)


def check_model_name(value: str, name: str = "model_name") -> str:
    """A model name that fits its columns with a checkpoint suffix, or 400."""
    if len(value) > MAX_MODEL_NAME:
        raise InvalidParameter(f"{name} is {len(value)} characters; the limit is {MAX_MODEL_NAME}.")
    return check_text(value, name)


def _resolve_model(rt: Runtime, s: Any, who: Principal, model: str) -> tuple[str, Model | None]:
    """(base model id, parent model row when continuing from a tuned model)."""
    if model in rt.catalog:
        return model, None
    parent = s.scalars(
        select(Model).where(Model.workspace_id == who.workspace_id, Model.name == model)
    ).first()
    if parent is not None:
        return parent.base_model, parent
    rt.catalog.get(model)  # raises InvalidParameter naming the known models
    raise AssertionError("unreachable")


def create(
    rt: Runtime,
    who: Principal,
    req: CreateJob,
    on_create: Callable[[Any, Job], None] | None = None,
) -> Job:
    """Accept a job in PENDING; the scheduler validates its data and queues it.

    `on_create(session, job)` adds rows of another view of the job (the OpenAI API's)
    in the same transaction."""
    if not isinstance(req.model, str) or not req.model.strip():
        raise InvalidParameter("Missing model: give a base model id or a fine-tuned model name.")
    model = check_text(req.model.strip(), "model")
    if len(model) > MAX_MODEL_NAME:
        raise InvalidParameter(f"model is {len(model)} characters; the limit is {MAX_MODEL_NAME}.")
    training_type = parse_training_type(req.training_type)
    training_ids = ids.file_id_list(req.training_file_ids, "training_file_ids")
    if not training_ids:
        raise InvalidParameter("Missing training files: training_file_ids needs 1 or more ids.")
    validation_ids = ids.file_id_list(req.validation_file_ids, "validation_file_ids")
    _check_file_count(rt, training_ids, validation_ids)
    if req.hyper_parameters is not None and not isinstance(req.hyper_parameters, dict):
        raise InvalidParameter("hyper_parameters must be a JSON object.")
    declared = dict(req.hyper_parameters or {})
    # Stored and echoed as sent: it must render (no NaN, no lone surrogate) before commit.
    check_json_value(declared, "hyper_parameters")
    resolved = resolve_hyper_parameters(rt, model, training_type, declared)
    suffix = _optional_str(req.finetuned_output_suffix, "finetuned_output_suffix", 64)
    model_name = _optional_str(req.model_name, "model_name", MAX_MODEL_NAME)
    job_name = _optional_str(req.job_name, "job_name")

    with rt.db.write() as s:
        rt.db.lock(s, "users", "id", who.user_id)
        rt.db.lock(s, "workspaces", "id", who.workspace_id)
        total_bytes = 0
        for fid in training_ids + validation_ids:
            f = s.get(StoredFile, fid)
            if f is None or f.workspace_id != who.workspace_id:
                raise InvalidParameter(f"File '{fid}' not found: upload it first (POST /files).")
            total_bytes += f.size
        if total_bytes > rt.settings.max_job_bytes:
            raise InvalidParameter(
                f"The job's files hold {total_bytes} bytes; the limit is "
                f"{rt.settings.max_job_bytes} bytes per job (DASHTUNE_MAX_JOB_BYTES)."
            )
        base_model, parent = _resolve_model(rt, s, who, model)
        if parent is not None:
            _check_continuation(s, parent, training_type, resolved, declared)
        now = utcnow()
        job_id = ids.new_job_id(now)
        while s.get(Job, job_id) is not None:
            job_id = ids.new_job_id(now)
        if model_name:
            output = model_name
            taken = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.workspace_id == who.workspace_id, Job.finetuned_output == output)
            ) or s.scalar(
                select(func.count())
                .select_from(Model)
                .where(Model.workspace_id == who.workspace_id, Model.name == output)
            )
            if taken:
                raise Conflict(f"Model name '{output}' is already taken in this workspace.")
        else:
            output = f"{model}-{suffix}-{job_id}" if suffix else f"{model}-{job_id}"
            if len(output) > MAX_MODEL_NAME:
                raise InvalidParameter(
                    f"The model name this job would produce ('{output[:40]}...') is over "
                    f"{MAX_MODEL_NAME} characters; give a shorter model_name or suffix."
                )
        _check_quota(rt, s, who)  # last: an invalid request says what is invalid, not 429
        ws = s.get(Workspace, who.workspace_id)
        assert ws is not None
        ws.job_count += 1
        by_model = s.get(ModelJobCount, (who.workspace_id, base_model))
        if by_model is None:  # the workspace's row lock makes this insert the only one
            by_model = ModelJobCount(workspace_id=who.workspace_id, base_model=base_model)
            by_model.job_count = 0
            s.add(by_model)
        by_model.job_count += 1
        job = Job(
            id=job_id,
            workspace_id=who.workspace_id,
            rank=ws.job_count,
            model_rank=by_model.job_count,
            user_id=who.user_id,
            modifier=who.user_id,
            job_name=job_name or job_id,
            status=JobStatus.PENDING.value,
            model=model,
            base_model=base_model,
            training_type=training_type.value,
            training_file_ids=training_ids,
            validation_file_ids=validation_ids,
            hyper_parameters=declared,
            resolved_hyper_parameters=resolved,
            finetuned_output=output,
            parent_model=parent.name if parent else None,
            create_time=now,
            usage=0,
            progress=0.0,
            metrics={},
            log_count=0,
        )
        s.add(job)
        s.flush()
        if on_create is not None:
            on_create(s, job)
        lines = [f"Job {job_id} created: {training_type.value} on {model}; validating data."]
        lines += [
            f"hyper_parameters.{k} is accepted but not applied by dashtune."
            for k in hyperparams.not_applied(declared)
        ]
        lines += [
            f"hyper_parameters.{k} is not used by {training_type.value}; it has no effect."
            for k in hyperparams.inapplicable(declared, training_type)
        ]
        append_lines(s, job_id, lines)
        rt.db.notify(s, wakeup.CHANNEL)  # a scheduler in another process validates it now
    rt.wakeup.notify()
    return job


def _check_file_count(rt: Runtime, training: list[str], validation: list[str]) -> None:
    limit = rt.settings.max_job_files
    if len(training) + len(validation) > limit:
        raise InvalidParameter(
            f"The job names {len(training) + len(validation)} files; the limit is {limit} "
            "training and validation files per job (DASHTUNE_MAX_JOB_FILES)."
        )
    for name, ids_ in (("training_file_ids", training), ("validation_file_ids", validation)):
        if len(set(ids_)) != len(ids_):
            again = next(f for i, f in enumerate(ids_) if f in ids_[:i])
            raise InvalidParameter(f"{name} lists file '{again}' more than once.")
    both = set(training) & set(validation)
    if both:
        raise InvalidParameter(
            f"File '{sorted(both)[0]}' is in both training_file_ids and validation_file_ids."
        )


def _check_quota(rt: Runtime, s: Any, who: Principal) -> None:
    counted = [x for x in JobStatus if x in QUOTA_STATES]  # in the state table's order
    used = s.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.user_id == who.user_id, Job.status.in_([str(x) for x in counted]))
    )
    limit = rt.settings.job_quota
    if (used or 0) >= limit:
        names = ", ".join(str(x) for x in counted[:-1]) + f" or {counted[-1]}"
        counts = "jobs counts" if used == 1 else "jobs count"
        raise Throttling(
            f"Job quota reached: {used} of your fine-tune {counts} against the limit of "
            f"{limit} per user (jobs that are {names} count; FAILED and CANCELED jobs do not). "
            "Delete jobs you no longer need (DELETE /fine-tunes/{job_id}, or `dashtune jobs "
            "delete`) or cancel queued ones, then retry."
        )


def _check_continuation(
    s: Any, parent: Model, training_type: Any, resolved: dict[str, Any], declared: dict[str, Any]
) -> None:
    """LoRA on a LoRA output keeps the earlier adapter's shape (§3.5)."""
    if parent.kind != "lora" or training_type not in LORA_TYPES:
        return
    earlier = s.get(Job, parent.job_id)
    if earlier is None:
        return
    for key in hyperparams.LORA_KEYS:
        want = earlier.resolved_hyper_parameters.get(key)
        if key in declared and resolved.get(key) != want:
            raise InvalidParameter(
                f"hyper_parameters.{key}={resolved.get(key)!r} differs from {want!r} used to train "
                f"'{parent.name}'; LoRA continued training must keep the same adapter shape."
            )
        resolved[key] = want


def get(rt: Runtime, who: Principal, job_id: str) -> Job:
    with rt.db.read() as s:
        job = s.get(Job, job_id)
    if job is None or job.workspace_id != who.workspace_id:
        raise NotFound(f"Fine-tune job '{job_id}' not found.")
    return job


def _locked(rt: Runtime, s: Session, who: Principal, job_id: str) -> Job:
    """The caller's job, locked for this write (a row lock on PostgreSQL; SQLite's write
    transaction already is one); another workspace's job is NotFound, as a missing one."""
    job = rt.db.locked(s, Job, job_id)
    if job is None or job.workspace_id != who.workspace_id:
        raise NotFound(f"Fine-tune job '{job_id}' not found.")
    return job


def cancel(rt: Runtime, who: Principal, job_id: str) -> Job:
    """PENDING/QUEUING end at once; RUNNING goes to CANCELING until its worker stops."""
    with rt.db.write() as s:
        job = _locked(rt, s, who, job_id)
        nxt = transition(job_id, job.status, Action.CANCEL)
        if nxt != job.status:
            job.status = nxt.value
            job.modifier = who.user_id
            if nxt is JobStatus.CANCELED:
                job.end_time = utcnow()
            append_lines(s, job_id, [f"Cancel requested by {who.user_name}; status {nxt}."])
    if job.status == JobStatus.CANCELED.value:  # e.g. PAUSED, or queued between attempts
        resume_points.drop_state(rt.settings.jobs_dir / job_id)
    return job


def pause(rt: Runtime, who: Principal, job_id: str) -> Job:
    """RUNNING goes to PAUSING until its worker has saved a resume point; QUEUING pauses at once."""
    with rt.db.write() as s:
        job = _locked(rt, s, who, job_id)
        nxt = transition(job_id, job.status, Action.PAUSE)
        if nxt != job.status:
            job.status = nxt.value
            job.modifier = who.user_id
            job.paused_by = "user"
            append_lines(s, job_id, [f"Pause requested by {who.user_name}; status {nxt}."])
    return job


def resume(rt: Runtime, who: Principal, job_id: str) -> Job:
    """PAUSED goes back to QUEUING; its next worker continues from the newest resume point."""
    with rt.db.write() as s:
        job = _locked(rt, s, who, job_id)
        job.status = transition(job_id, job.status, Action.RESUME).value
        job.modifier = who.user_id
        job.paused_by = None
        append_lines(s, job_id, [f"Resume requested by {who.user_name}; job queued."])
        rt.db.notify(s, wakeup.CHANNEL)
    rt.wakeup.notify()
    return job


def delete(rt: Runtime, who: Principal, job_id: str) -> None:
    """Only ended jobs; removes logs, metrics, checkpoints, models and artifacts."""
    with rt.db.write() as s:
        rt.db.lock(s, "workspaces", "id", who.workspace_id)
        job = s.get(Job, job_id)
        if job is None or job.workspace_id != who.workspace_id:
            raise NotFound(f"Fine-tune job '{job_id}' not found.")
        transition(job_id, job.status, Action.DELETE)
        serving = s.scalars(
            select(Deployment.deployed_model).where(Deployment.job_id == job_id)
        ).first()
        if serving is not None:
            raise UnsupportedOperation(
                f"The fine-tune job {job_id} cannot be deleted: its model is deployed as "
                f"'{serving}'. Delete the deployment first."
            )
        # Keep ranks dense so list pages stay index ranges.
        s.execute(
            update(Job)
            .where(Job.workspace_id == who.workspace_id, Job.rank > job.rank)
            .values(rank=Job.rank - 1)
        )
        s.execute(
            update(Job)
            .where(
                Job.workspace_id == who.workspace_id,
                Job.base_model == job.base_model,
                Job.model_rank > job.model_rank,
            )
            .values(model_rank=Job.model_rank - 1)
        )
        ws = s.get(Workspace, who.workspace_id)
        assert ws is not None
        ws.job_count -= 1
        by_model = s.get(ModelJobCount, (who.workspace_id, job.base_model))
        if by_model is not None:
            by_model.job_count -= 1
        for table in (JobLog, JobMetric, Checkpoint, Model, OpenAIJob):
            s.execute(sql_delete(table).where(table.job_id == job_id))
        s.delete(job)
    # Rows first: a crash from here on leaves directories no row names, which the
    # start-up sweep removes (store/sweep.py).
    crashpoint.reach(rt.settings, "job-delete-after-rows")
    discard_tree(rt.settings, rt.settings.jobs_dir / job_id)
    discard_tree(rt.settings, rt.settings.models_dir / job_id)


def logs(rt: Runtime, who: Principal, job_id: str, offset: int, line: int) -> tuple[list[str], int]:
    job = get(rt, who, job_id)
    # Both bounds stay in the 32-bit column's range (PostgreSQL casts the parameters to it).
    offset = min(offset, MAX_LOG_OFFSET)
    last = min(offset + min(line, MAX_LOG_LINES), MAX_LOG_OFFSET)
    with rt.db.read() as s:
        rows = s.scalars(
            select(JobLog.line)
            .where(JobLog.job_id == job_id, JobLog.seq > offset, JobLog.seq <= last)
            .order_by(JobLog.seq)
        ).all()
    return list(rows), job.log_count


@dataclass
class StreamState:
    """What a job stream shows of a job, read for many jobs in one query."""

    status: str
    progress: float
    metrics: dict[str, Any]
    log_count: int
    total_steps: int | None = None


def stream_states(rt: Runtime, job_ids: list[str]) -> dict[str, StreamState]:
    """The stream state of each of `job_ids` that still exists (the caller checked access)."""
    with rt.db.read() as s:
        rows = s.execute(
            select(
                Job.id, Job.status, Job.progress, Job.metrics, Job.log_count, Job.total_steps
            ).where(Job.id.in_(job_ids))
        ).all()
    return {
        r.id: StreamState(r.status, r.progress, r.metrics or {}, r.log_count, r.total_steps)
        for r in rows
    }


def metric_before_last(rt: Runtime, job_id: str) -> int:
    """The id of the job's second newest metric point (0 if none): a stream that starts at
    the end shows the newest point and what follows."""
    with rt.db.read() as s:
        ids = s.scalars(
            select(JobMetric.id)
            .where(JobMetric.job_id == job_id)
            .order_by(JobMetric.id.desc())
            .limit(2)
        ).all()
    return ids[1] if len(ids) == 2 else 0


def log_lines(rt: Runtime, job_id: str, after: int, limit: int) -> list[tuple[int, str]]:
    """(seq, line) of the lines after `after`, at most `limit`."""
    with rt.db.read() as s:
        rows = s.execute(
            select(JobLog.seq, JobLog.line)
            .where(JobLog.job_id == job_id, JobLog.seq > after, JobLog.seq <= after + limit)
            .order_by(JobLog.seq)
        ).all()
    return [(r.seq, r.line) for r in rows]


def checkpoints(rt: Runtime, who: Principal, job_id: str) -> list[Checkpoint]:
    get(rt, who, job_id)
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
            ).all()
        )


def metrics(rt: Runtime, who: Principal, job_id: str, after: int = 0) -> list[JobMetric]:
    """The job's recorded metric points in order; `after` a point's id: only newer ones."""
    get(rt, who, job_id)
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(JobMetric)
                .where(JobMetric.job_id == job_id, JobMetric.id > after)
                .order_by(JobMetric.id)
            )
        )


def export(
    rt: Runtime, who: Principal, job_id: str, checkpoint: str, model_name: str | None
) -> None:
    """Start exporting a checkpoint as a model; the scheduler copies it (PROCESSING -> SUCCEEDED)."""
    if not model_name or not model_name.strip():
        raise InvalidParameter("Missing model_name: the name the exported model will have.")
    model_name = check_model_name(model_name.strip())
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.workspace_id != who.workspace_id:
            raise NotFound(f"Fine-tune job '{job_id}' not found.")
        transition(job_id, job.status, Action.EXPORT)
        ckpt = s.get(Checkpoint, (job_id, checkpoint))
        if ckpt is None:
            raise NotFound(f"Checkpoint '{checkpoint}' of job '{job_id}' not found.")
        if ckpt.status in ("PROCESSING", "SUCCEEDED"):
            if ckpt.model_name == model_name:
                return
            raise Conflict(f"Checkpoint '{checkpoint}' is already exported as '{ckpt.model_name}'.")
        taken = (
            s.scalars(
                select(Model.name).where(
                    Model.workspace_id == who.workspace_id, Model.name == model_name
                )
            ).first()
            or s.scalars(
                select(Job.id).where(
                    Job.workspace_id == who.workspace_id,
                    Job.finetuned_output == model_name,
                    Job.id != job_id,
                )
            ).first()
        )
        if taken:
            raise Conflict(f"Model name '{model_name}' is already taken in this workspace.")
        ckpt.status = "PROCESSING"
        ckpt.model_name = model_name
        append_lines(s, job_id, [f"Export of {checkpoint} as '{model_name}' started."])
