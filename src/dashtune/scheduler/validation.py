"""Validation of PENDING jobs beside the scheduling loop, in a bounded pool of threads.

The loop only hands jobs over: a job with large files no longer holds up claims,
cancels or other tenants' jobs. At most one job per workspace is validated at a time,
so one tenant's big uploads take one thread, never all of them; each validation stops
after DASHTUNE_VALIDATION_TIMEOUT_SECONDS (the job fails saying so).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from dashtune.services import engine
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job

log = logging.getLogger("dashtune.scheduler")


class Validator:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, rt.settings.validation_workers), thread_name_prefix="validate"
        )
        self._lock = threading.Lock()
        self._busy: dict[str, str] = {}  # job id -> workspace id

    def submit_pending(self) -> int:
        """Hand PENDING jobs to free threads (one per workspace); returns how many."""
        free = self.rt.settings.validation_workers - len(self._busy)
        if free <= 0:
            return 0
        handed = 0
        for job in engine.pending_jobs(self.rt):
            with self._lock:
                if job.id in self._busy or job.workspace_id in self._busy.values():
                    continue
                if len(self._busy) >= self.rt.settings.validation_workers:
                    break
                self._busy[job.id] = job.workspace_id
            self._pool.submit(self._validate, job).add_done_callback(self._done(job.id))
            handed += 1
        return handed

    def _validate(self, job: Job) -> None:
        engine.validate(self.rt, job)

    def _done(self, job_id: str) -> Callable[[Future[None]], None]:
        def done(fut: Future[None]) -> None:
            with self._lock:
                self._busy.pop(job_id, None)
            self.rt.wakeup.notify()  # a job now QUEUING is claimed at once, not next tick
            if fut.exception() is not None:  # e.g. the database was down: retried next tick
                log.error("validation of job %s failed: %s", job_id, fut.exception())

        return done

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
