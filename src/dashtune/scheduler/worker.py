"""The worker process of one job: `python -m dashtune.scheduler.worker JOB_ID`.

It builds the trainer's spec from the store, runs `trainer.run.train`, and reports
through the store: log lines, metrics, progress, checkpoints, and how it ended. A
heartbeat thread keeps the job alive in the store and turns a CANCELING status into
the trainer's stop file, so a cancel works the same for any executor.
"""

from __future__ import annotations

import sys
import threading
import traceback
from pathlib import Path

from dashtune.config import Settings
from dashtune.services import engine, weights
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job, StoredFile
from dashtune.trainer.errors import TrainingError
from dashtune.trainer.spec import TrainSpec


class StoreReporter:
    """The trainer's `Reporter`, written to the store through the engine services."""

    def __init__(self, rt: Runtime, job_id: str) -> None:
        self.rt = rt
        self.job_id = job_id

    def log(self, line: str) -> None:
        engine.log(self.rt, self.job_id, [line])

    def metrics(self, step: int, values: dict[str, float]) -> None:
        engine.record_metrics(self.rt, self.job_id, step, values)

    def progress(self, step: int, total_steps: int, eta_seconds: float | None) -> None:
        engine.record_progress(self.rt, self.job_id, step, total_steps, eta_seconds)

    def checkpoint(self, name: str, step: int, path: str, metrics: dict[str, float]) -> None:
        engine.add_checkpoint(self.rt, self.job_id, name, step, path, metrics)

    def checkpoint_removed(self, name: str) -> None:
        engine.remove_checkpoint(self.rt, self.job_id, name)


class Heartbeat(threading.Thread):
    def __init__(self, rt: Runtime, job_id: str, stop_file: Path) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.rt, self.job_id, self.stop_file = rt, job_id, stop_file
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.rt.settings.heartbeat_interval):
            try:
                status = engine.heartbeat(self.rt, self.job_id)
            except Exception:  # a DB hiccup must not kill training; the next beat retries
                continue
            if status in (None, "CANCELING"):
                self.stop_file.touch()


def build_spec(rt: Runtime, job: Job) -> TrainSpec:
    """Paths for the trainer: the weights to start from, the data files, the output dir."""
    start = weights.resolve(rt, job.workspace_id, job.parent_model or job.model)
    if start.builtin:
        from dashtune.trainer.tiny import ensure_tiny_model

        ensure_tiny_model(start.base_path)
    with rt.db.read() as s:

        def blob_paths(ids: list[str]) -> list[str]:
            paths = []
            for fid in ids:
                f = s.get(StoredFile, fid)
                if f is None:
                    raise TrainingError("InvalidParameter", f"File {fid} was deleted.")
                paths.append(str(rt.blobs.path(f.blob).resolve()))
            return paths

        training = blob_paths(job.training_file_ids)
        validation = blob_paths(job.validation_file_ids)
    out = (rt.settings.jobs_dir / job.id).resolve()
    out.mkdir(parents=True, exist_ok=True)
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
    )


def main(job_id: str) -> int:
    settings = Settings()
    rt = Runtime.open(settings, run_migrations=False)
    with rt.db.read() as s:
        job = s.get(Job, job_id)
    if job is None:
        return 2
    stop_file = settings.jobs_dir / job_id / "STOP"
    beat = Heartbeat(rt, job_id, stop_file)
    beat.start()
    outcome = engine.Outcome()
    try:
        spec = build_spec(rt, job)
        from dashtune.trainer.run import train

        result = train(spec, StoreReporter(rt, job_id), threads=settings.worker_threads)
        outcome = engine.Outcome(
            usage=result.usage_tokens,
            final_path=None if result.canceled else result.final_path,
            canceled=result.canceled,
        )
    except TrainingError as exc:
        outcome = engine.Outcome(code=exc.code, message=exc.message)
    except Exception as exc:
        outcome = engine.Outcome(
            code="TrainingFailed",
            message=f"{type(exc).__name__}: {exc}. The traceback is in the job's logs.",
            traceback=traceback.format_exc(),
        )
    finally:
        beat.done.set()
    engine.finish(rt, job_id, outcome)
    rt.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
