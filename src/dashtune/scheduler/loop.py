"""The scheduler thread of the server process.

Each tick: validate PENDING jobs, finish exports, end jobs whose worker is gone, and
(with an executor) claim QUEUING jobs into free slots and enforce cancels.
"""

from __future__ import annotations

import logging
import threading

from dashtune.services import engine
from dashtune.services.runtime import Runtime

log = logging.getLogger("dashtune.scheduler")


class Scheduler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashtune-scheduler", daemon=True)
        self.executor = None
        if rt.settings.executor == "local":
            from dashtune.scheduler.local import LocalExecutor

            self.executor = LocalExecutor(rt)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.executor is not None:
            self.executor.shutdown()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            self._stop.wait(self.rt.settings.scheduler_interval)

    def tick(self) -> None:
        rt = self.rt
        engine.validate_pending(rt)
        engine.run_exports(rt)
        alive = self.executor.running() if self.executor else None
        engine.fail_lost(rt, rt.settings.heartbeat_timeout, alive)
        if self.executor is not None:
            self.executor.reap()
            self.executor.fail_lost_here()
            self.executor.enforce_cancels()
            while self.executor.free_slots() > 0:
                job = engine.claim_next(rt, self.executor.host)
                if job is None:
                    break
                self.executor.launch(job)
