"""The scheduler: a role that runs inside `serve` or alone (`dashtune scheduler`).

Each tick: renew this scheduler's lease, hand PENDING jobs to the validation pool,
finish exports, take over the live jobs (of this executor) of schedulers whose lease
expired, end jobs whose worker is gone (its own, and those of dead schedulers: every stale job converges), and
(with an executor) enforce cancels and claim QUEUING jobs that fit what is free.
Several schedulers may share one PostgreSQL database: a claim takes each job once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from dashtune.scheduler.executor import Executor
from dashtune.scheduler.validation import Validator
from dashtune.scheduler.webhooks import Dispatcher
from dashtune.services import engine
from dashtune.services.runtime import Runtime
from dashtune.services.wakeup import CHANNEL

log = logging.getLogger("dashtune.scheduler")


class ConfigError(Exception):
    """A setting that makes the scheduler unable to start; the message says what to set."""


def preflight(rt: Runtime) -> None:
    """Refuse at start-up, with a clear message, settings the scheduler cannot run with."""
    if rt.settings.executor not in ("local", "ray", "none"):
        raise ConfigError(
            f"DASHTUNE_EXECUTOR={rt.settings.executor!r} is not one of: local, ray, none."
        )
    if rt.settings.executor == "ray" and rt.db.is_sqlite:
        raise ConfigError(
            "DASHTUNE_EXECUTOR=ray needs PostgreSQL (DASHTUNE_DATABASE_URL=postgresql://...): "
            "workers on other nodes write their logs and metrics to the database, and "
            "they cannot reach this machine's SQLite file."
        )


def make_executor(rt: Runtime) -> Executor | None:
    """The executor the settings name; Ray is imported only when it is selected."""
    preflight(rt)
    if rt.settings.executor == "local":
        from dashtune.scheduler.local import LocalExecutor

        return LocalExecutor(rt)
    if rt.settings.executor == "ray":
        from dashtune.scheduler.ray import RayExecutor

        return RayExecutor(rt)
    return None


class Scheduler:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.id = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashtune-scheduler", daemon=True)
        # PostgreSQL: creates of other processes (API replicas) wake this one too.
        self._listener = threading.Thread(
            target=rt.db.listen,
            args=(CHANNEL, rt.wakeup.notify, self._stop),
            name="dashtune-scheduler-listen",
            daemon=True,
        )
        self.webhooks = Dispatcher(rt)
        self.validator = Validator(rt)
        self.executor = make_executor(rt)
        self._last_beat = 0.0

    def start(self) -> None:
        self._beat()
        self._listener.start()
        self._thread.start()
        self.webhooks.start()

    def request_stop(self) -> None:
        self._stop.set()
        self.rt.wakeup.notify()

    def stop(self) -> None:
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.webhooks.stop()
        self.validator.shutdown()
        if self.executor is not None:
            self.executor.shutdown()
        engine.end_scheduler(self.rt, self.id)

    def run_forever(self) -> None:
        """The `dashtune scheduler` process: tick in this thread until stopped."""
        self._beat()
        self._listener.start()
        self.webhooks.start()
        self._run()

    def _run(self) -> None:
        if self.executor is not None:
            try:  # what this host paused when it last shut down continues now
                engine.resume_after_shutdown(self.rt, self.executor.host)
            except Exception:
                log.exception("resuming jobs paused by the last shutdown failed")
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            # A create or a validated job wakes it early (services/wakeup.py).
            self.rt.wakeup.wait(self.rt.settings.scheduler_interval)

    def _beat(self) -> None:
        ex = self.executor
        inv = ex.inventory().to_json() if ex else {"executor": "none", "nodes": []}
        host = ex.host if ex else socket.gethostname()
        engine.beat_scheduler(self.rt, self.id, host, ex.name if ex else "none", inv)
        self._last_beat = time.monotonic()

    def tick(self) -> None:
        rt, ex = self.rt, self.executor
        lease = rt.settings.scheduler_lease_seconds
        beat_due = time.monotonic() - self._last_beat >= lease / 3
        if beat_due:
            self._beat()
        self.validator.submit_pending()
        engine.run_exports(rt)
        if beat_due and ex is not None:
            for orphan in engine.take_orphans(rt, self.id, lease, ex.host):
                log.info("job %s: its scheduler is gone; re-attaching", orphan.id)
                ex.adopt(orphan)
        if ex is not None:
            # First what the executor knows for sure (an exit, a pid gone after a restart):
            # a more precise reason than a heartbeat that stopped, which may also be stale.
            ex.reap()
        alive = ex.running() if ex else None
        engine.fail_lost(rt, rt.settings.heartbeat_timeout, alive, owner=self.id)
        if ex is None:
            return
        ex.enforce_cancels()
        while True:
            job = engine.claim_next(rt, ex.host, self.id, ex.free_capacity(), ex.name)
            if job is None:
                break
            ex.launch(job)
