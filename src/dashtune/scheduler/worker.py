"""The worker process of one job: `python -m dashtune.scheduler.worker JOB_ID`.

It builds the trainer's spec from the store, runs `trainer.run.train`, and reports
through the store: log lines, metrics, progress, checkpoints, and how it ended. A
heartbeat thread keeps the job alive in the store and turns a CANCELING status into
the trainer's stop file (PAUSING: its pause file), so a cancel or a pause works the same
for any executor (locally or on a Ray node: the worker opens the database itself, never
through the scheduler). A retried or resumed job continues from its newest resume point.

Under data-parallel training (`num_workers > 1`, started by torchrun or Ray Train with
RANK and WORLD_SIZE set) every rank trains, and rank 0 alone reports and ends the job.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.exc import OperationalError

from dashtune.config import Settings
from dashtune.domain import worker_exits
from dashtune.services import engine, hub, weights
from dashtune.services.runtime import Runtime
from dashtune.store import resume_points
from dashtune.store.tables import Job, StoredFile
from dashtune.trainer.errors import MODEL_LOAD_ERROR, TrainingError
from dashtune.trainer.spec import TrainSpec


class StoreReporter:
    """The trainer's `Reporter`, written to the store through the engine services. Each
    write names the worker's attempt: one given up on (its node lost) changes nothing.

    A write that cannot reach the database (an outage, a restart, a lock held past the
    busy timeout) is tried again each second for `patience` seconds, the trainer waiting
    in its callback meanwhile: a database back within that time costs the job a pause,
    not a failure. Past it, the error ends the job as before."""

    def __init__(
        self, rt: Runtime, job_id: str, attempt: int | None = None, patience: float = 0.0
    ) -> None:
        self.rt = rt
        self.job_id = job_id
        self.attempt = attempt
        self.patience = patience

    def log(self, line: str) -> None:
        self._write(engine.log, self.rt, self.job_id, [line])

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._write(engine.record_metrics, self.rt, self.job_id, step, values, self.attempt)

    def progress(self, step: int, total_steps: int, eta_seconds: float | None) -> None:
        self._write(
            engine.record_progress,
            self.rt,
            self.job_id,
            step,
            total_steps,
            eta_seconds,
            self.attempt,
        )

    def checkpoint(self, name: str, step: int, path: str, metrics: dict[str, float]) -> None:
        self._write(
            engine.add_checkpoint, self.rt, self.job_id, name, step, path, metrics, self.attempt
        )

    def checkpoint_removed(self, name: str) -> None:
        self._write(engine.remove_checkpoint, self.rt, self.job_id, name, self.attempt)

    def _write(self, write: Callable[..., object], *args: Any) -> None:
        retrying(self.patience, OperationalError, write, *args)


class SilentReporter:
    """The reporter of ranks other than 0: rank 0 reports for the whole job."""

    def log(self, line: str) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def progress(self, step: int, total_steps: int, eta_seconds: float | None) -> None: ...

    def checkpoint(self, name: str, step: int, path: str, metrics: dict[str, float]) -> None: ...

    def checkpoint_removed(self, name: str) -> None: ...


class Heartbeat(threading.Thread):
    def __init__(
        self, rt: Runtime, job_id: str, stop_file: Path, pause_file: Path, attempt: int
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.rt, self.job_id, self.stop_file = rt, job_id, stop_file
        self.pause_file, self.attempt = pause_file, attempt
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.rt.settings.heartbeat_interval):
            try:
                status = engine.heartbeat(self.rt, self.job_id, self.attempt)
            except Exception:  # a DB hiccup must not kill training; the next beat retries
                continue
            if status == engine.SUPERSEDED:
                # Given up on (its node was lost) while it ran on, e.g. cut off: another
                # attempt owns the job and its directory now, so stop at once, touching
                # nothing (a stop file there would stop the new attempt).
                print(f"attempt {self.attempt} of {self.job_id} superseded; exiting", flush=True)
                os._exit(worker_exits.SUPERSEDED)
            if status in (None, "CANCELING"):
                self.stop_file.touch()
            elif status == "PAUSING":
                self.pause_file.touch()


def _fetch(rt: Runtime, job: Job, repo: str, model_id: str) -> str:
    """Download a catalog model on first use, progress in the job's logs (unless offline)."""
    if rt.settings.hf_offline:
        raise TrainingError(MODEL_LOAD_ERROR, hub.how_to_fetch(repo, model_id))
    try:
        return hub.download(repo, lambda line: engine.log(rt, job.id, [line]))
    except Exception as exc:  # network, auth, a repo that does not exist: all say the same
        raise TrainingError(
            MODEL_LOAD_ERROR,
            f"Downloading {repo} for '{model_id}' failed ({type(exc).__name__}: {exc}). "
            f"Fetch it by hand with `hf download {repo}`, or point the catalog entry at a "
            "local directory (docs/models.md).",
        ) from None


def build_spec(rt: Runtime, job: Job) -> TrainSpec:
    """Paths for the trainer: the weights to start from, the data files, the output dir."""
    start = weights.resolve(rt, job.workspace_id, job.parent_model or job.model)
    if start.builtin:
        from dashtune.trainer.tiny import ensure_tiny_model

        ensure_tiny_model(start.base_path)
    elif not os.path.isdir(start.base_path):  # a catalog repo id not in the HF cache yet
        start = replace(start, base_path=_fetch(rt, job, start.base_path, start.base_model))
    with rt.db.read() as s:

        def blob_paths(ids: list[str]) -> list[str]:
            paths = []
            for fid in ids:
                f = s.get(StoredFile, fid)
                if f is None:
                    raise TrainingError("InvalidParameter", f"File {fid} was deleted.")
                path = rt.blobs.path(f.blob).resolve()
                if not os.access(path, os.R_OK):
                    raise TrainingError(
                        "DataUnavailable",
                        f"the worker on {where()} cannot read training file {fid} at {path}: "
                        f"DASHTUNE_DATA_DIR={rt.settings.data_dir.resolve()} must be storage "
                        "that every node mounts at the same path",
                    )
                paths.append(str(path))
            return paths

        training = blob_paths(job.training_file_ids)
        validation = blob_paths(job.validation_file_ids)
    out = (rt.settings.jobs_dir / job.id).resolve()
    out.mkdir(parents=True, exist_ok=True)
    point = resume_points.newest(out)
    return TrainSpec(
        job_id=job.id,
        training_type=job.training_type,
        model_path=start.base_path,
        adapter_path=start.adapter_path,  # full training on it: the trainer merges it first
        training_files=training,
        validation_files=validation,
        hyper_parameters=dict(job.resolved_hyper_parameters),
        output_dir=str(out),
        stop_file=str(out / "STOP"),
        pause_file=str(out / "PAUSE"),
        resume_from=str(point[2]) if point else None,
    )


def where() -> str:
    """This worker's place: the host, and the Ray node when the launcher said which."""
    node = os.environ.get("DASHTUNE_RAY_NODE_ID")
    return f"{socket.gethostname()} (Ray node {node})" if node else socket.gethostname()


def main(job_id: str) -> int:
    settings = Settings()
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rt = Runtime.open(settings, run_migrations=False)
    with rt.db.read() as s:
        job = s.get(Job, job_id)
    if job is None or job.status not in engine.LIVE:
        rt.close()  # canceled (or ended) before this worker started: nothing to do
        return 0
    devices = os.environ.get("CUDA_VISIBLE_DEVICES")
    engine.log(
        rt,
        job_id,
        [
            f"worker {rank} of {world} started on {where()}, pid {os.getpid()}"
            + (f", CUDA_VISIBLE_DEVICES={devices}" if devices is not None else "")
        ],
    )
    stop_file = settings.jobs_dir / job_id / "STOP"
    pause_file = settings.jobs_dir / job_id / "PAUSE"
    pause_file.unlink(missing_ok=True)  # an earlier attempt's pause; a new one is re-touched
    attempt = job.attempts or 1
    beat = Heartbeat(rt, job_id, stop_file, pause_file, attempt)
    if rank == 0:
        beat.start()
    outcome = engine.Outcome()
    try:
        if not settings.data_dir.is_dir():
            raise TrainingError(
                "DataUnavailable",
                f"the worker on {where()} cannot read DASHTUNE_DATA_DIR={settings.data_dir}: "
                "on a cluster it must be storage that every node mounts at the same path",
            )
        spec = build_spec(rt, job)
        from dashtune.trainer.run import train

        reporter = (
            StoreReporter(rt, job_id, attempt, patience=settings.heartbeat_timeout / 2)
            if rank == 0
            else SilentReporter()
        )
        result = train(spec, reporter, threads=settings.worker_threads)
        if world > 1:  # each rank says where it stopped: all at the same step
            ended = " (canceled)" if result.canceled else ""
            engine.log(
                rt, job_id, [f"worker {rank} of {world} ended at step {result.steps}{ended}"]
            )
        outcome = engine.Outcome(
            usage=result.usage_tokens,
            final_path=None if result.canceled or result.paused else result.final_path,
            canceled=result.canceled,
            paused=result.paused,
        )
    except TrainingError as exc:
        outcome = engine.Outcome(code=exc.code, message=exc.message)
    except Exception as exc:
        if worker_exits.is_disk_full(exc):
            outcome = engine.Outcome(
                code="DiskFull",
                message=f"Disk full: no space left to write the job's data ({exc}). Free space "
                f"on the disk of the data directory ({settings.data_dir.resolve()}), then "
                "create the job again.",
            )
        else:
            outcome = engine.Outcome(
                code="TrainingFailed",
                message=f"{type(exc).__name__}: {exc}. The traceback is in the job's logs.",
                traceback=traceback.format_exc(),
            )
    finally:
        beat.done.set()
    outcome.attempt = attempt
    code = 0
    if rank == 0 or outcome.code:
        code = record(rt, job_id, outcome, settings.heartbeat_timeout / 2)
    rt.close()
    return code


def record(rt: Runtime, job_id: str, outcome: engine.Outcome, patience: float) -> int:
    """Write the outcome, retrying for `patience` seconds; the exit code says what failed."""
    try:
        retrying(patience, Exception, engine.finish, rt, job_id, outcome)
        return 0
    except Exception as exc:  # the database is down or its disk is full
        print(f"could not record the outcome of {job_id}: {exc}", file=sys.stderr)
        if worker_exits.is_disk_full(exc) or outcome.code == "DiskFull":
            return worker_exits.DISK_FULL
        return worker_exits.STORE_UNREACHABLE


def retrying(
    patience: float, errors: type[Exception], write: Callable[..., object], *args: Any
) -> None:
    """`write(*args)`, tried again each second while it raises `errors`, for `patience`
    seconds; then the last error goes to the caller."""
    deadline = time.monotonic() + patience
    while True:
        try:
            write(*args)
            return
        except errors as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"a store write failed, retrying: {exc}", flush=True)
            time.sleep(1)


if __name__ == "__main__":
    code = main(sys.argv[1])
    # The job's outcome is recorded: exit now rather than after the interpreter's teardown
    # of torch and tokenizer threads (seconds on a loaded machine; a cancel waits on it).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
