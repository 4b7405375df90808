"""Local executor: one worker process per job on this machine.

Workers are started as `python -m dashtune.scheduler.worker JOB_ID` in their own
session, with one torch thread each (two busy processes on 2 cores made steps 40x
slower). Cancel: the worker stops at the next step on its own; after a grace period
the executor sends SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import psutil

from dashtune.domain.states import JobStatus
from dashtune.services import engine
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job

log = logging.getLogger("dashtune.scheduler")


@dataclass
class _Worker:
    proc: subprocess.Popen[bytes]
    cancel_seen: float | None = None
    termed: bool = False


class LocalExecutor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.host = socket.gethostname()
        self.workers: dict[str, _Worker] = {}

    def worker_env(self) -> dict[str, str]:
        s = self.rt.settings
        threads = str(s.worker_threads)
        env = dict(os.environ)
        env.update(
            {
                "DASHTUNE_DATA_DIR": str(s.data_dir.resolve()),
                "DASHTUNE_DATABASE_URL": s.database_url,
                "OMP_NUM_THREADS": threads,
                "MKL_NUM_THREADS": threads,
                "DASHTUNE_WORKER_THREADS": threads,
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "HF_DATASETS_CACHE": str((s.data_dir / "cache" / "datasets").resolve()),
            }
        )
        return env

    def launch(self, job: Job) -> None:
        job_dir = self.rt.settings.jobs_dir / job.id
        job_dir.mkdir(parents=True, exist_ok=True)
        with open(job_dir / "worker.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "dashtune.scheduler.worker", job.id],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.worker_env(),
                start_new_session=True,
            )
        self.workers[job.id] = _Worker(proc)
        engine.set_worker(self.rt, job.id, proc.pid)
        log.info("job %s started in worker pid %d", job.id, proc.pid)

    def running(self) -> set[str]:
        return {jid for jid, w in self.workers.items() if w.proc.poll() is None}

    def free_slots(self) -> int:
        return self.rt.settings.max_concurrent_jobs - len(self.running())

    def reap(self) -> None:
        for job_id, w in list(self.workers.items()):
            rc = w.proc.poll()
            if rc is None:
                continue
            del self.workers[job_id]
            status = engine.worker_exited(self.rt, job_id, rc)
            log.info("worker of job %s exited rc=%s; job %s", job_id, rc, status)

    def fail_lost_here(self) -> None:
        """Jobs this host ran whose worker process is gone, e.g. after a server restart:
        ended at once instead of after the heartbeat timeout."""
        for job_id, pid in engine.live_jobs_on(self.rt, self.host):
            if job_id not in self.workers and (pid is None or not psutil.pid_exists(pid)):
                status = engine.worker_exited(self.rt, job_id, None)
                log.info("job %s lost its worker (pid %s); now %s", job_id, pid, status)

    def enforce_cancels(self) -> None:
        grace = self.rt.settings.cancel_grace_seconds
        for job_id, w in self.workers.items():
            if w.proc.poll() is not None:
                continue
            status = engine.status(self.rt, job_id)
            if status not in (JobStatus.CANCELING.value, None):
                continue
            now = time.monotonic()
            if w.cancel_seen is None:
                w.cancel_seen = now
                (self.rt.settings.jobs_dir / job_id).mkdir(parents=True, exist_ok=True)
                (self.rt.settings.jobs_dir / job_id / "STOP").touch()
            elif now - w.cancel_seen > grace and not w.termed:
                self._signal(w, signal.SIGTERM)
                w.termed = True
            elif now - w.cancel_seen > grace + 5:
                self._signal(w, signal.SIGKILL)

    @staticmethod
    def _signal(w: _Worker, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.proc.pid, sig)

    def shutdown(self) -> None:
        """Server stopping: stop our workers; their jobs end FAILED (or CANCELED) now."""
        for w in self.workers.values():
            if w.proc.poll() is None:
                self._signal(w, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for w in self.workers.values():
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(w, signal.SIGKILL)
                w.proc.wait()
        self.reap()
