"""Job use cases for the training engine: validate, claim, report, finish, recover.

The scheduler and the worker processes call these; every state change still goes
through `domain.states.transition`, so the engine obeys the same table as users.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from dashtune.domain.datasets import DatasetError, check_dataset
from dashtune.domain.states import Action, JobStatus, transition
from dashtune.domain.training import LORA_TYPES, TrainingType
from dashtune.services.runtime import Runtime, utcnow
from dashtune.store.joblog import append_lines
from dashtune.store.tables import Checkpoint, Job, JobMetric, Model, StoredFile

LIVE = (JobStatus.RUNNING.value, JobStatus.CANCELING.value)


def _apply(job: Job, action: Action) -> JobStatus:
    nxt = transition(job.id, job.status, action)
    job.status = nxt.value
    return nxt


def validate_pending(rt: Runtime, limit: int = 10) -> int:
    """Check the data of PENDING jobs: QUEUING when every line is valid, else FAILED."""
    with rt.db.read() as s:
        pending = s.scalars(
            select(Job)
            .where(Job.status == JobStatus.PENDING.value)
            .order_by(Job.create_time)
            .limit(limit)
        ).all()
    for job in pending:
        problem: tuple[str, str] | None = None
        counts: list[str] = []
        for kind, fids in (
            ("training", job.training_file_ids),
            ("validation", job.validation_file_ids),
        ):
            for fid in fids:
                with rt.db.read() as s:
                    f = s.get(StoredFile, fid)
                if f is None:
                    problem = (
                        "InvalidParameter",
                        f"{kind} file {fid} was deleted before the job ran.",
                    )
                    break
                try:
                    n = check_dataset(rt.blobs.lines(f.blob), TrainingType(job.training_type))
                except DatasetError as exc:
                    problem = ("InvalidDataset", f"{kind} file '{f.name}' ({fid}) {exc}.")
                    break
                counts.append(f"{f.name}: {n} samples")
            if problem:
                break
        with rt.db.write() as s:
            fresh = s.get(Job, job.id)
            if fresh is None or fresh.status != JobStatus.PENDING.value:
                continue  # canceled or deleted meanwhile
            if problem:
                _fail(s, fresh, problem[0], problem[1])
            else:
                _apply(fresh, Action.VALIDATE)
                append_lines(s, job.id, [f"Data valid ({'; '.join(counts)}); job queued."])
    return len(pending)


def _fail(s: Any, job: Job, code: str, message: str, traceback: str | None = None) -> None:
    _apply(job, Action.FAIL)
    job.code = code
    job.message = message
    job.end_time = utcnow()
    lines = [f"Job failed: {code}: {message}"]
    if traceback:
        lines += traceback.rstrip().splitlines()
    append_lines(s, job.id, lines)


def claim_next(rt: Runtime, host: str) -> Job | None:
    """Atomically take the oldest QUEUING job (SKIP LOCKED on PostgreSQL) and mark it RUNNING."""
    with rt.db.read() as s:  # most ticks find nothing: no write lock for them
        if s.scalar(select(Job.id).where(Job.status == JobStatus.QUEUING.value).limit(1)) is None:
            return None
    with rt.db.write() as s:
        q = (
            select(Job)
            .where(Job.status == JobStatus.QUEUING.value)
            .order_by(Job.create_time, Job.id)
        )
        if not rt.db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        job = s.scalars(q.limit(1)).first()
        if job is None:
            return None
        _apply(job, Action.START)
        now = utcnow()
        job.start_time = now
        job.heartbeat_at = now
        job.worker_host = host
        append_lines(s, job.id, [f"Job started on {host}."])
        return job


def set_worker(rt: Runtime, job_id: str, pid: int) -> None:
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.worker_pid = pid
            job.heartbeat_at = utcnow()


def heartbeat(rt: Runtime, job_id: str) -> str | None:
    """Mark the worker alive; returns the job's status so the worker learns of a cancel."""
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            return None
        job.heartbeat_at = utcnow()
        return job.status


def status(rt: Runtime, job_id: str) -> str | None:
    with rt.db.read() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id))


def log(rt: Runtime, job_id: str, lines: list[str]) -> None:
    with rt.db.write() as s:
        if s.get(Job, job_id) is not None:
            append_lines(s, job_id, lines)


def record_metrics(rt: Runtime, job_id: str, step: int, values: dict[str, float]) -> None:
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        s.add(JobMetric(job_id=job_id, step=step, values=values, created_at=utcnow()))
        latest = dict(job.metrics or {})
        latest.update(values)
        latest["step"] = step
        job.metrics = latest


def record_progress(rt: Runtime, job_id: str, step: int, total: int, eta: float | None) -> None:
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        job.progress = min(1.0, step / total) if total else 0.0
        job.eta_seconds = eta
        job.heartbeat_at = utcnow()


def add_checkpoint(
    rt: Runtime, job_id: str, name: str, step: int, path: str, metrics: dict[str, float]
) -> None:
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None:
            return
        row = s.get(Checkpoint, (job_id, name))
        if row is None:
            row = Checkpoint(
                job_id=job_id,
                name=name,
                step=step,
                path=path,
                status="PENDING",
                model_name=f"{job.finetuned_output}-{name}",
                metrics=metrics,
                created_at=utcnow(),
            )
            s.add(row)
        else:
            row.path, row.metrics = path, metrics


def remove_checkpoint(rt: Runtime, job_id: str, name: str) -> None:
    """A checkpoint rotated out by save_total_limit; an exported one stays (its copy does)."""
    with rt.db.write() as s:
        row = s.get(Checkpoint, (job_id, name))
        if row is not None and row.status == "PENDING":
            s.delete(row)


@dataclass
class Outcome:
    usage: int = 0
    final_path: str | None = None
    canceled: bool = False
    code: str | None = None
    message: str | None = None
    traceback: str | None = None


def finish(rt: Runtime, job_id: str, outcome: Outcome) -> str | None:
    """Record how a worker ended: SUCCEEDED (and register the model), CANCELED or FAILED."""
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.status not in LIVE:
            return job.status if job else None
        job.usage = outcome.usage
        if outcome.code:
            _fail(s, job, outcome.code, outcome.message or "training failed", outcome.traceback)
        elif outcome.canceled or not outcome.final_path:
            if job.status == JobStatus.CANCELING.value:
                _apply(job, Action.STOPPED)
                job.end_time = utcnow()
                append_lines(s, job_id, [f"Job canceled; {outcome.usage} tokens trained."])
            else:
                _fail(s, job, "TrainingFailed", "The worker stopped without a cancel request.")
        else:
            assert outcome.final_path
            _apply(job, Action.SUCCEED)
            job.end_time = utcnow()
            job.progress = 1.0
            job.eta_seconds = 0.0
            _register_output(s, job, outcome.final_path)
            append_lines(s, job_id, [f"Fine-tune succeeded: model '{job.finetuned_output}'."])
        return job.status


def _add_model(s: Any, job: Job, name: str, path: str, checkpoint: str | None) -> None:
    """Register weights of `job` as a model of its workspace (callable, trainable further)."""
    kind = "lora" if TrainingType(job.training_type) in LORA_TYPES else "full"
    s.add(
        Model(
            workspace_id=job.workspace_id,
            name=name,
            job_id=job.id,
            checkpoint=checkpoint,
            base_model=job.base_model,
            kind=kind,
            path=path,
            created_at=utcnow(),
        )
    )


def _register_output(s: Any, job: Job, final_path: str) -> None:
    _add_model(s, job, job.finetuned_output, final_path, None)
    last = s.scalars(
        select(Checkpoint).where(Checkpoint.job_id == job.id).order_by(Checkpoint.step.desc())
    ).first()
    step = int((job.metrics or {}).get("step", 0))
    if last is not None and last.step >= step:
        last.model_name, last.status, last.path = job.finetuned_output, "SUCCEEDED", final_path
    else:
        s.add(
            Checkpoint(
                job_id=job.id,
                name=f"checkpoint-{step}",
                step=step,
                path=final_path,
                status="SUCCEEDED",
                model_name=job.finetuned_output,
                metrics=dict(job.metrics or {}),
                created_at=utcnow(),
            )
        )


def fail_lost(rt: Runtime, timeout: float, alive: set[str] | None = None) -> list[str]:
    """End RUNNING/CANCELING jobs whose worker stopped heartbeating (killed, OOM, restart)."""
    cutoff = utcnow() - timedelta(seconds=timeout)

    def stale(job: Job) -> bool:
        if alive is not None and job.id in alive:
            return False
        return job.heartbeat_at is None or job.heartbeat_at <= cutoff

    # Look first with a read: the write transaction (a lock on SQLite) only when needed.
    with rt.db.read() as s:
        candidates = [j.id for j in s.scalars(select(Job).where(Job.status.in_(LIVE))) if stale(j)]
    ended = []
    for job_id in candidates:
        with rt.db.write() as s:
            job = s.get(Job, job_id)
            if job is not None and job.status in LIVE and stale(job):
                _end_lost(s, job, f"no heartbeat for {timeout:.0f} s")
                ended.append(job_id)
    return ended


def live_jobs_on(rt: Runtime, host: str) -> list[tuple[str, int | None]]:
    """(job id, worker pid) of RUNNING/CANCELING jobs claimed by `host`."""
    with rt.db.read() as s:
        rows = s.execute(
            select(Job.id, Job.worker_pid).where(Job.status.in_(LIVE), Job.worker_host == host)
        ).all()
    return [(r.id, r.worker_pid) for r in rows]


def worker_exited(rt: Runtime, job_id: str, returncode: int | None) -> str | None:
    """The scheduler saw the worker process exit; a job it left live ends here."""
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None or job.status not in LIVE:
            return job.status if job else None
        if returncode is None:
            why = "its process is gone"
        elif returncode < 0:
            why = f"killed by signal {-returncode}"
        else:
            why = f"exit code {returncode}"
        _end_lost(s, job, why)
        return job.status


def _end_lost(s: Any, job: Job, why: str) -> None:
    if job.status == JobStatus.CANCELING.value:
        _apply(job, Action.STOPPED)
        job.end_time = utcnow()
        append_lines(s, job.id, [f"Worker stopped ({why}); job canceled."])
    else:
        _fail(
            s,
            job,
            "WorkerLost",
            f"The training worker died ({why}) before the job ended; it may have been killed "
            "or run out of memory. Create the job again to retry.",
        )


def run_exports(rt: Runtime) -> int:
    """Copy checkpoints in PROCESSING to the model store and register them."""
    with rt.db.read() as s:
        todo = s.scalars(select(Checkpoint).where(Checkpoint.status == "PROCESSING")).all()
    for ckpt in todo:
        with rt.db.read() as s:
            job = s.get(Job, ckpt.job_id)
        if job is None:
            continue
        target = rt.settings.models_dir / job.id / ckpt.name
        try:
            if not target.exists():
                tmp = target.with_name(target.name + ".part")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(ckpt.path, tmp)
                tmp.rename(target)
            state = "SUCCEEDED"
        except OSError as exc:
            state = "FAILED"
            log(rt, job.id, [f"Export of {ckpt.name} failed: {exc}"])
        with rt.db.write() as s:
            row = s.get(Checkpoint, (ckpt.job_id, ckpt.name))
            if row is None or row.status != "PROCESSING":
                continue
            row.status = state
            if state == "SUCCEEDED":
                _add_model(s, job, row.model_name, str(target), row.name)
                append_lines(s, job.id, [f"Export of {row.name} as '{row.model_name}' succeeded."])
    return len(todo)


def model_path(rt: Runtime, workspace_id: str, name: str) -> Model | None:
    with rt.db.read() as s:
        return s.scalars(
            select(Model).where(Model.workspace_id == workspace_id, Model.name == name)
        ).first()
