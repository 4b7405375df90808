"""Fine-tune job use cases for callers (§3): create, read, list, cancel, delete, logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete as sql_delete
from sqlalchemy import func, select, update

from dashtune.domain import hyperparams, ids
from dashtune.domain.errors import Conflict, InvalidParameter, NotFound, Throttling
from dashtune.domain.states import QUOTA_STATES, Action, JobStatus, transition
from dashtune.domain.training import LORA_TYPES, parse_training_type
from dashtune.services.runtime import Runtime, utcnow
from dashtune.services.tenancy import Principal
from dashtune.store.blobs import remove_tree
from dashtune.store.joblog import append_lines
from dashtune.store.tables import (
    Checkpoint,
    Deployment,
    Job,
    JobLog,
    JobMetric,
    Model,
    StoredFile,
    Workspace,
)

MAX_LOG_LINES = 1000


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


def _id_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidParameter(f"{name} must be an array of file ids.")
    return [v.strip() for v in value]


def _optional_str(value: Any, name: str, limit: int = 200) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidParameter(f"{name} must be a string of at most {limit} characters.")
    return value.strip()


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


def create(rt: Runtime, who: Principal, req: CreateJob) -> Job:
    """Accept a job in PENDING; the scheduler validates its data and queues it."""
    if not isinstance(req.model, str) or not req.model.strip():
        raise InvalidParameter("Missing model: give a base model id or a fine-tuned model name.")
    model = req.model.strip()
    training_type = parse_training_type(req.training_type)
    training_ids = _id_list(req.training_file_ids, "training_file_ids")
    if not training_ids:
        raise InvalidParameter("Missing training files: training_file_ids needs 1 or more ids.")
    validation_ids = _id_list(req.validation_file_ids, "validation_file_ids")
    if req.hyper_parameters is not None and not isinstance(req.hyper_parameters, dict):
        raise InvalidParameter("hyper_parameters must be a JSON object.")
    declared = dict(req.hyper_parameters or {})
    resolved = hyperparams.resolve(declared, training_type)
    suffix = _optional_str(req.finetuned_output_suffix, "finetuned_output_suffix", 64)
    model_name = _optional_str(req.model_name, "model_name", 300)
    job_name = _optional_str(req.job_name, "job_name")

    with rt.db.write() as s:
        rt.db.lock(s, "users", "id", who.user_id)
        rt.db.lock(s, "workspaces", "id", who.workspace_id)
        for fid in training_ids + validation_ids:
            f = s.get(StoredFile, fid)
            if f is None or f.workspace_id != who.workspace_id:
                raise InvalidParameter(f"File '{fid}' not found: upload it first (POST /files).")
        base_model, parent = _resolve_model(rt, s, who, model)
        if parent is not None:
            _check_continuation(s, parent, training_type, resolved, declared)
        used = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.user_id == who.user_id, Job.status.in_([str(x) for x in QUOTA_STATES]))
        )
        if (used or 0) >= rt.settings.job_quota:
            raise Throttling(
                f"Only {rt.settings.job_quota} fine-tune job in running or succeeded allowed "
                "per user. Delete jobs or models that are no longer in use, then retry."
            )
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
        ws = s.get(Workspace, who.workspace_id)
        assert ws is not None
        ws.job_count += 1
        job = Job(
            id=job_id,
            workspace_id=who.workspace_id,
            rank=ws.job_count,
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
        lines = [f"Job {job_id} created: {training_type.value} on {model}; validating data."]
        lines += [
            f"hyper_parameters.{k} is accepted but not applied by dashtune."
            for k in hyperparams.not_applied(declared)
        ]
        append_lines(s, job_id, lines)
    return job


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


def page(
    rt: Runtime, who: Principal, page_no: int, page_size: int, model: str | None = None
) -> tuple[list[Job], int]:
    """Newest first. Without a filter a page is a range of `rank`: cost is independent of page_no."""
    with rt.db.read() as s:
        if not model:
            total = s.scalar(select(Workspace.job_count).where(Workspace.id == who.workspace_id))
            total = int(total or 0)
            hi = total - (page_no - 1) * page_size
            lo = hi - page_size + 1
            rows = s.scalars(
                select(Job)
                .where(Job.workspace_id == who.workspace_id, Job.rank.between(lo, hi))
                .order_by(Job.rank.desc())
            ).all()
            return list(rows), total
        # `model` filters by base model (§3.4), on the (workspace, base_model, rank) index.
        cond = (Job.workspace_id == who.workspace_id) & (Job.base_model == model)
        total = int(s.scalar(select(func.count()).select_from(Job).where(cond)) or 0)
        rows = s.scalars(
            select(Job)
            .where(cond)
            .order_by(Job.rank.desc())
            .offset((page_no - 1) * page_size)
            .limit(page_size)
        ).all()
        return list(rows), total


def cancel(rt: Runtime, who: Principal, job_id: str) -> Job:
    """PENDING/QUEUING end at once; RUNNING goes to CANCELING until its worker stops."""
    with rt.db.write() as s:
        job = s.get(Job, job_id, with_for_update=not rt.db.is_sqlite)
        if job is None or job.workspace_id != who.workspace_id:
            raise NotFound(f"Fine-tune job '{job_id}' not found.")
        nxt = transition(job_id, job.status, Action.CANCEL)
        if nxt != job.status:
            job.status = nxt.value
            job.modifier = who.user_id
            if nxt is JobStatus.CANCELED:
                job.end_time = utcnow()
            append_lines(s, job_id, [f"Cancel requested by {who.user_name}; status {nxt}."])
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
            from dashtune.domain.errors import UnsupportedOperation

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
        ws = s.get(Workspace, who.workspace_id)
        assert ws is not None
        ws.job_count -= 1
        for table in (JobLog, JobMetric, Checkpoint, Model):
            s.execute(sql_delete(table).where(table.job_id == job_id))
        s.delete(job)
    remove_tree(rt.settings.jobs_dir / job_id)
    remove_tree(rt.settings.models_dir / job_id)


def logs(rt: Runtime, who: Principal, job_id: str, offset: int, line: int) -> tuple[list[str], int]:
    job = get(rt, who, job_id)
    with rt.db.read() as s:
        rows = s.scalars(
            select(JobLog.line)
            .where(JobLog.job_id == job_id, JobLog.seq > offset, JobLog.seq <= offset + line)
            .order_by(JobLog.seq)
        ).all()
    return list(rows), job.log_count


def checkpoints(rt: Runtime, who: Principal, job_id: str) -> list[Checkpoint]:
    get(rt, who, job_id)
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
            ).all()
        )


def metrics(rt: Runtime, who: Principal, job_id: str) -> list[JobMetric]:
    get(rt, who, job_id)
    with rt.db.read() as s:
        return list(
            s.scalars(select(JobMetric).where(JobMetric.job_id == job_id).order_by(JobMetric.id))
        )


def export(
    rt: Runtime, who: Principal, job_id: str, checkpoint: str, model_name: str | None
) -> None:
    """Start exporting a checkpoint as a model; the scheduler copies it (PROCESSING -> SUCCEEDED)."""
    if not model_name or not model_name.strip():
        raise InvalidParameter("Missing model_name: the name the exported model will have.")
    model_name = model_name.strip()
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
