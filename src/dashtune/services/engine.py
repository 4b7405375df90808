"""Job use cases for the training engine: validate, claim, report, finish, recover.

The scheduler and the worker processes call these; every state change still goes
through `domain.states.transition`, so the engine obeys the same table as users.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from dashtune import crashpoint
from dashtune.domain import worker_exits as exits
from dashtune.domain.datasets import DatasetError, check_dataset
from dashtune.domain.states import Action, JobStatus, is_terminal, transition
from dashtune.domain.training import LORA_TYPES, TrainingType
from dashtune.services.runtime import Runtime, utcnow
from dashtune.store import resume_points
from dashtune.store.joblog import append_lines
from dashtune.store.tables import Checkpoint, Job, JobMetric, Model, SchedulerLease, StoredFile

SHUTDOWN = "shutdown"  # paused_by of jobs a stopping scheduler paused
SUPERSEDED = "SUPERSEDED"  # what `heartbeat` tells a worker of an attempt given up on

# A worker runs (or should be stopping) for jobs in these states.
LIVE = (JobStatus.RUNNING.value, JobStatus.CANCELING.value, JobStatus.PAUSING.value)
# Queued jobs a claim looks at for one that fits the free resources now.
CLAIM_WINDOW = 50
Fits = Callable[[Job], bool]
EVAL_KEYS = frozenset({"eval_loss"})  # metrics of an evaluation, not of a train step


def _apply(job: Job, action: Action) -> JobStatus:
    nxt = transition(job.id, job.status, action)
    job.status = nxt.value
    return nxt


def pending_jobs(rt: Runtime, limit: int = 100) -> list[Job]:
    """PENDING jobs, oldest first: their data awaits validation."""
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(Job)
                .where(Job.status == JobStatus.PENDING.value)
                .order_by(Job.create_time)
                .limit(limit)
            ).all()
        )


class ValidationTimeout(Exception):
    pass


def _timed(lines: Iterable[bytes], deadline: float, timeout: float) -> Iterator[bytes]:
    for i, line in enumerate(lines):
        if i % 1024 == 0 and time.monotonic() > deadline:
            raise ValidationTimeout(f"took longer than {timeout:.0f} s")
        yield line


def validate(rt: Runtime, job: Job) -> None:
    """Check the data of one PENDING job, within DASHTUNE_VALIDATION_TIMEOUT_SECONDS:
    QUEUING when every line is valid, else FAILED."""
    timeout = rt.settings.validation_timeout_seconds
    deadline = time.monotonic() + timeout
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
                problem = ("InvalidParameter", f"{kind} file {fid} was deleted before the job ran.")
                break
            try:
                lines = _timed(rt.blobs.lines(f.blob), deadline, timeout)
                n = check_dataset(lines, TrainingType(job.training_type))
            except DatasetError as exc:
                problem = ("InvalidDataset", f"{kind} file '{f.name}' ({fid}) {exc}.")
                break
            except ValidationTimeout as exc:
                problem = (
                    "InvalidDataset",
                    f"validating the data {exc} (DASHTUNE_VALIDATION_TIMEOUT_SECONDS); "
                    "use fewer or smaller files.",
                )
                break
            counts.append(f"{f.name}: {n} samples")
        if problem:
            break
    if problem is None:
        from dashtune.services import readiness  # imports engine (weights.resolve)

        problem = readiness.problem(rt, job)
    with rt.db.write() as s:
        fresh = rt.db.locked(s, Job, job.id)
        if fresh is None or fresh.status != JobStatus.PENDING.value:
            return  # canceled or deleted meanwhile
        if problem:
            _fail(s, fresh, problem[0], problem[1])
        else:
            _apply(fresh, Action.VALIDATE)
            append_lines(s, job.id, [f"Data valid ({'; '.join(counts)}); job queued."])


def validate_pending(rt: Runtime, limit: int = 10) -> int:
    """Validate PENDING jobs one after the other, here (the scheduler uses a pool)."""
    pending = pending_jobs(rt, limit)
    for job in pending:
        validate(rt, job)
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


def claim_next(
    rt: Runtime,
    host: str,
    scheduler_id: str | None = None,
    fits: Fits | None = None,
    executor: str | None = None,
) -> Job | None:
    """Atomically take the oldest QUEUING job that `fits` now (SKIP LOCKED on PostgreSQL,
    so several schedulers each claim a job once) and mark it RUNNING. With `executor`, its
    `placement` starts in the same transaction (no nodes yet; the launch adds them), so a
    RUNNING job always says where it is placed, if only "not yet"."""
    with rt.db.read() as s:  # most ticks find nothing: no write lock for them
        if s.scalar(select(Job.id).where(Job.status == JobStatus.QUEUING.value).limit(1)) is None:
            return None
    with rt.db.write() as s:
        q = (
            select(Job)
            .where(Job.status == JobStatus.QUEUING.value)
            .order_by(Job.create_time, Job.id)
            .limit(CLAIM_WINDOW)
        )
        if not rt.db.is_sqlite:
            q = q.with_for_update(skip_locked=True)
        job = next((j for j in s.scalars(q) if fits is None or fits(j)), None)
        if job is None:
            return None
        _apply(job, Action.START)
        now = utcnow()
        job.start_time = job.start_time or now  # a retried or resumed job started earlier
        job.heartbeat_at = now
        job.worker_host = host
        job.scheduler_id = scheduler_id
        job.worker_pid = None
        job.paused_by = None
        job.attempts = max(job.attempts or 0, 1)
        if executor is not None:
            workers = int((job.resolved_hyper_parameters or {}).get("num_workers") or 1)
            job.placement = {
                "executor": executor,
                "nodes": [],
                "devices": [],
                "num_workers": workers,
            }
        started = f"Job started on {host}"
        if job.attempts > 1:
            started += f" (attempt {job.attempts} of {rt.settings.max_attempts})"
        append_lines(s, job.id, [started + "."])
        return job


def set_placement(rt: Runtime, job_id: str, placement: dict[str, Any]) -> None:
    """Where the job's workers run (the job object's `placement`): merged into what is known."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is not None:
            job.placement = {**(job.placement or {}), **placement}


def add_placement_node(rt: Runtime, job_id: str, node: str) -> None:
    """A data-parallel worker says which node it runs on (row-locked: ranks race)."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is not None:
            placement = dict(job.placement or {})
            nodes = list(placement.get("nodes") or [])
            if node not in nodes:
                placement["nodes"] = [*nodes, node]
                job.placement = placement


def beat_scheduler(rt: Runtime, scheduler_id: str, host: str, executor: str, inv: Any) -> None:
    """Renew this scheduler's lease, with the inventory the API checks new jobs against."""
    now = utcnow()
    with rt.db.write() as s:
        row = s.get(SchedulerLease, scheduler_id)
        if row is None:
            s.add(
                SchedulerLease(
                    id=scheduler_id,
                    host=host,
                    executor=executor,
                    inventory=inv,
                    started_at=now,
                    heartbeat_at=now,
                )
            )
        else:
            row.heartbeat_at, row.inventory = now, inv
        # Leases of schedulers killed long ago: their jobs were taken over by then.
        s.execute(
            delete(SchedulerLease).where(SchedulerLease.heartbeat_at < now - timedelta(days=1))
        )


def end_scheduler(rt: Runtime, scheduler_id: str) -> None:
    with rt.db.write() as s:
        row = s.get(SchedulerLease, scheduler_id)
        if row is not None:
            s.delete(row)


def take_orphans(rt: Runtime, scheduler_id: str, lease_seconds: float, host: str) -> list[Job]:
    """Live jobs run by `host` (this host, or "ray") whose scheduler's lease expired (or
    that have none): now ours, once each."""
    cutoff = utcnow() - timedelta(seconds=lease_seconds)
    with rt.db.read() as s:
        alive = set(
            s.scalars(select(SchedulerLease.id).where(SchedulerLease.heartbeat_at > cutoff))
        )
        candidates = [
            (j.id, j.scheduler_id)
            for j in s.scalars(select(Job).where(Job.status.in_(LIVE), Job.worker_host == host))
            if j.scheduler_id != scheduler_id and j.scheduler_id not in alive
        ]
    taken = []
    for job_id, previous in candidates:
        with rt.db.write() as s:
            q = select(Job).where(Job.id == job_id)
            if not rt.db.is_sqlite:
                q = q.with_for_update()
            job = s.scalars(q).first()
            if job is None or job.status not in LIVE or job.scheduler_id != previous:
                continue  # ended, or another scheduler took it first
            job.scheduler_id = scheduler_id
            append_lines(s, job_id, [f"Scheduler {previous} is gone; {scheduler_id} took the job."])
            s.flush()
            s.expunge(job)
            taken.append(job)
    return taken


def set_worker(rt: Runtime, job_id: str, pid: int) -> None:
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is not None:
            job.worker_pid = pid
            job.heartbeat_at = utcnow()


def heartbeat(rt: Runtime, job_id: str, attempt: int | None = None) -> str | None:
    """Mark the worker alive; returns the job's status so the worker learns of a cancel.
    A worker of an earlier `attempt` (its node was declared lost, yet it runs on) gets
    SUPERSEDED and marks nothing: the job is another worker's now."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None:
            return None
        if _superseded(job, attempt):
            return SUPERSEDED
        job.heartbeat_at = utcnow()
        return job.status


def status(rt: Runtime, job_id: str) -> str | None:
    with rt.db.read() as s:
        return s.scalar(select(Job.status).where(Job.id == job_id))


def log(rt: Runtime, job_id: str, lines: list[str]) -> None:
    with rt.db.write() as s:
        if s.get(Job, job_id) is not None:
            append_lines(s, job_id, lines)


def _superseded(job: Job, attempt: int | None) -> bool:
    """A report from the worker of an earlier attempt (given up on, yet running on)."""
    return attempt is not None and (job.attempts or 1) != attempt


def record_metrics(
    rt: Runtime, job_id: str, step: int, values: dict[str, float], attempt: int | None = None
) -> None:
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or _superseded(job, attempt):
            return
        s.add(JobMetric(job_id=job_id, step=step, values=values, created_at=utcnow()))
        latest = dict(job.metrics or {})
        latest.update(values)
        # Each value says its step: `step` is the train values' step, `eval_step` eval_loss's.
        latest["eval_step" if set(values) <= EVAL_KEYS else "step"] = step
        job.metrics = latest


def record_progress(
    rt: Runtime,
    job_id: str,
    step: int,
    total: int,
    eta: float | None,
    attempt: int | None = None,
) -> None:
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or _superseded(job, attempt):
            return
        job.progress = min(1.0, step / total) if total else 0.0
        job.total_steps = total or None
        job.eta_seconds = eta
        job.heartbeat_at = utcnow()


def add_checkpoint(
    rt: Runtime,
    job_id: str,
    name: str,
    step: int,
    path: str,
    metrics: dict[str, float],
    attempt: int | None = None,
) -> None:
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or _superseded(job, attempt):
            return
        row = s.get(Checkpoint, (job_id, name))
        if row is not None and row.status != "PENDING":
            return  # exported already: its copy is what users see
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
            row.path = path
            row.metrics = metrics or row.metrics  # re-listed on resume: keep what it had


def remove_checkpoint(rt: Runtime, job_id: str, name: str, attempt: int | None = None) -> None:
    """A checkpoint rotated out by save_total_limit; an exported one stays (its copy does)."""
    with rt.db.write() as s:
        job = s.get(Job, job_id)
        if job is None or _superseded(job, attempt):
            return
        row = s.get(Checkpoint, (job_id, name))
        if row is not None and row.status == "PENDING":
            s.delete(row)


@dataclass
class Outcome:
    usage: int = 0
    final_path: str | None = None
    canceled: bool = False
    paused: bool = False  # stopped at a resume point because the job is PAUSING
    attempt: int | None = None  # the worker's attempt: a later one's job is not its to end
    code: str | None = None
    message: str | None = None
    traceback: str | None = None


def finish(rt: Runtime, job_id: str, outcome: Outcome) -> str | None:
    """Record how a worker ended: SUCCEEDED (and register the model), PAUSED, CANCELED or
    FAILED."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or job.status not in LIVE:
            return job.status if job else None
        if _superseded(job, outcome.attempt):
            return job.status  # a worker given up on (node lost) that ran on: not its job now
        job.usage = outcome.usage
        if outcome.paused and job.status == JobStatus.PAUSING.value:
            _apply(job, Action.STOPPED)
            step = int((job.metrics or {}).get("step", 0))
            append_lines(
                s, job_id, [f"Job paused after step {step}; resume it to continue from there."]
            )
        elif outcome.code:
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
        status = job.status
    _after(rt, job_id, status)
    return status


def _after(rt: Runtime, job_id: str, status: str | None) -> None:
    """Once a job has ended (committed), its resume state goes: it is large and unneeded."""
    if status is not None and is_terminal(status):
        resume_points.drop_state(rt.settings.jobs_dir / job_id)


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
    latest = job.metrics or {}
    step = int(max(latest.get("step", 0), latest.get("eval_step", 0)))
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


def fail_lost(
    rt: Runtime, timeout: float, alive: set[str] | None = None, owner: str | None = None
) -> list[str]:
    """End RUNNING/CANCELING jobs whose worker stopped heartbeating (killed, OOM, restart).
    With `owner` (a scheduler id), jobs of other live schedulers are theirs to watch:
    their executor may know the job is alive (e.g. waiting for a Ray node)."""
    cutoff = utcnow() - timedelta(seconds=timeout)
    others: set[str] = set()
    if owner is not None:
        lease = utcnow() - timedelta(seconds=rt.settings.scheduler_lease_seconds)
        with rt.db.read() as s:
            others = set(
                s.scalars(select(SchedulerLease.id).where(SchedulerLease.heartbeat_at > lease))
            )
        others.discard(owner)

    def stale(job: Job) -> bool:
        if alive is not None and job.id in alive:
            return False
        if job.scheduler_id in others:
            return False
        return job.heartbeat_at is None or job.heartbeat_at <= cutoff

    # Look first with a read: the write transaction (a lock on SQLite) only when needed.
    with rt.db.read() as s:
        candidates = [j.id for j in s.scalars(select(Job).where(Job.status.in_(LIVE))) if stale(j)]
    ended = []
    for job_id in candidates:
        with rt.db.write() as s:
            job = rt.db.locked(s, Job, job_id)
            if job is None or job.status not in LIVE or not stale(job):
                continue
            _end_lost(
                rt,
                s,
                job,
                f"no heartbeat for {timeout:.0f} s: its host or its link to the database is down",
            )
            ended.append(job_id)
            status = job.status
        _after(rt, job_id, status)
    return ended


def live_jobs_on(rt: Runtime, host: str) -> list[tuple[str, int | None, str | None]]:
    """(job id, worker pid, scheduler id) of the live jobs claimed by `host`, read together:
    a job claimed by another scheduler has its owner before its pid."""
    with rt.db.read() as s:
        rows = s.execute(
            select(Job.id, Job.worker_pid, Job.scheduler_id).where(
                Job.status.in_(LIVE), Job.worker_host == host
            )
        ).all()
    return [(r.id, r.worker_pid, r.scheduler_id) for r in rows]


def worker_exited(
    rt: Runtime, job_id: str, returncode: int | None, why: str | None = None
) -> str | None:
    """The scheduler saw the worker process exit, or its node die (`why` says which node);
    a job it left live ends here, or is queued again to resume (`_end_lost`)."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or job.status not in LIVE:
            return job.status if job else None
        told = exits.reason(returncode)
        if why is not None:
            _end_lost(rt, s, job, why)
        elif returncode == exits.DISK_FULL:
            _end(s, job, "DiskFull", f"The job stopped: {told}. Free space, then create it again.")
        elif told is not None:  # the store was unreachable: no outcome recorded, so retry
            _end_lost(rt, s, job, told)
        elif returncode is None:
            _end_lost(rt, s, job, "its process is gone")
        elif returncode < 0:
            _end_lost(rt, s, job, f"killed by signal {-returncode}", may_be_oom=returncode == -9)
        else:
            _end_lost(rt, s, job, f"exit code {returncode}")
        status = job.status
    _after(rt, job_id, status)
    return status


def worker_failed(rt: Runtime, job_id: str, code: str, message: str) -> str | None:
    """The executor stopped a worker for a reason of its own (e.g. its memory limit)."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or job.status not in LIVE:
            return job.status if job else None
        _end(s, job, code, message)
        status = job.status
    _after(rt, job_id, status)
    return status


def _end(s: Any, job: Job, code: str, message: str) -> None:
    """FAILED with `code`, or CANCELED when a cancel was asked for anyway."""
    if job.status == JobStatus.CANCELING.value:
        _apply(job, Action.STOPPED)
        job.end_time = utcnow()
        append_lines(s, job.id, [f"Worker stopped ({message}); job canceled."])
    else:
        _fail(s, job, code, message)


def _end_lost(rt: Runtime, s: Any, job: Job, why: str, may_be_oom: bool = False) -> None:
    """A live job whose worker is gone, whatever the executor: a CANCELING job is canceled,
    a PAUSING one paused, a RUNNING one queued again to resume until its attempts run out."""
    point = resume_points.newest(rt.settings.jobs_dir / job.id)
    if job.status == JobStatus.PAUSING.value:
        _apply(job, Action.STOPPED)
        # Stopped before it saved a resume point of its own: the steps after the newest one
        # are trained again on resume, as after a lost attempt.
        _forget_after(s, job, point[1] if point else None)
        where = f"from {point[0]}" if point else "from the start"
        append_lines(s, job.id, [f"Worker stopped ({why}) while pausing; resumes {where}."])
    elif job.status == JobStatus.RUNNING.value and (job.attempts or 1) < rt.settings.max_attempts:
        step = int((job.metrics or {}).get("step", 0))
        _apply(job, Action.RETRY)
        job.attempts = (job.attempts or 1) + 1
        job.worker_pid = None
        _forget_after(s, job, point[1] if point else None)
        where = f"resumes from {point[0]}" if point else "starts again from the beginning"
        append_lines(
            s,
            job.id,
            [
                f"Worker lost at step {step} ({why}); attempt {job.attempts} of "
                f"{rt.settings.max_attempts} {where}."
            ],
        )
    else:
        hint = " it may have been killed or run out of memory." if may_be_oom else ""
        _end(
            s,
            job,
            "WorkerLost",
            f"The training worker died ({why}) before the job ended, on attempt "
            f"{job.attempts or 1} of {rt.settings.max_attempts};{hint} "
            "Create the job again to retry.",
        )


def _forget_after(s: Any, job: Job, step: int | None) -> None:
    """Drop the metrics a lost attempt recorded after the resume point (all of them when
    it starts again): the next attempt records those steps again, so the curve has each
    step once."""
    q = delete(JobMetric).where(JobMetric.job_id == job.id)
    if step is not None:
        q = q.where(JobMetric.step > step)
    s.execute(q)
    latest: dict[str, Any] = {}
    for row in s.scalars(
        select(JobMetric).where(JobMetric.job_id == job.id).order_by(JobMetric.id)
    ):
        latest.update(row.values)
        latest["eval_step" if set(row.values) <= EVAL_KEYS else "step"] = row.step
    job.metrics = latest


def pause_live(rt: Runtime, job_id: str, by: str) -> bool:
    """Ask the worker of a RUNNING job to save a resume point and stop (e.g. on shutdown)."""
    with rt.db.write() as s:
        job = rt.db.locked(s, Job, job_id)
        if job is None or job.status != JobStatus.RUNNING.value:
            return False
        _apply(job, Action.PAUSE)
        job.paused_by = by
        append_lines(s, job_id, [f"Pausing: {by}; the job resumes from where it stops."])
        return True


def resume_after_shutdown(rt: Runtime, host: str) -> list[str]:
    """Jobs that `host` paused when it shut down are queued again when it starts."""
    with rt.db.read() as s:
        paused = s.scalars(
            select(Job.id).where(
                Job.status == JobStatus.PAUSED.value,
                Job.paused_by == SHUTDOWN,
                Job.worker_host == host,
            )
        ).all()
    resumed = []
    for job_id in paused:
        with rt.db.write() as s:
            job = rt.db.locked(s, Job, job_id)
            if job is None or job.status != JobStatus.PAUSED.value or job.paused_by != SHUTDOWN:
                continue
            _apply(job, Action.RESUME)
            job.paused_by = None
            append_lines(s, job_id, [f"Scheduler on {host} started again; job queued to resume."])
            resumed.append(job_id)
    return resumed


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
                # Per process: two schedulers may export the same checkpoint at once.
                tmp = target.with_name(f"{target.name}.part-{os.getpid()}")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(ckpt.path, tmp, ignore=resume_points.export_ignore())
                try:
                    tmp.rename(target)
                except OSError:
                    if not target.exists():
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)  # the other copy won
            # A crash here: the checkpoint stays PROCESSING and the next pass registers it.
            crashpoint.reach(rt.settings, "export-after-copy")
            state = "SUCCEEDED"
        except OSError as exc:
            state = "FAILED"
            log(rt, job.id, [f"Export of {ckpt.name} failed: {exc}"])
        with rt.db.write() as s:
            row = rt.db.locked(s, Checkpoint, (ckpt.job_id, ckpt.name))
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
