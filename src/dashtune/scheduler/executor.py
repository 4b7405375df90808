"""The one interface the scheduler loop talks to, whatever runs the workers.

`local.py` starts worker processes on this host; `ray.py` submits them to a Ray cluster.
The loop claims a QUEUING job only when `free_capacity()` says it fits now, launches it,
and each tick asks the executor to reap workers that ended and to enforce cancels. A job
whose scheduler died is handed to `adopt`, which re-attaches to its workers where the
executor can (a Ray job by its submission id) and otherwise leaves it to the heartbeat
timeout.
"""

from __future__ import annotations

from typing import Protocol

from dashtune.domain.resources import Inventory
from dashtune.services.engine import Fits
from dashtune.store.tables import Job


class Executor(Protocol):
    name: str  # "local" | "ray": the job's placement.executor
    host: str  # recorded as the job's worker_host at claim

    def inventory(self) -> Inventory:
        """What this executor has; published in the scheduler's lease for create checks."""
        ...

    def free_capacity(self) -> Fits:
        """A test, over a snapshot of what is free now, of whether a job fits."""
        ...

    def launch(self, job: Job) -> None:
        """Start the workers of a job just claimed (RUNNING) and record its placement."""
        ...

    def running(self) -> set[str]:
        """Jobs whose workers this executor sees alive (not failed for missed heartbeats)."""
        ...

    def reap(self) -> None:
        """End, per the state table, the live jobs whose workers exited or whose node died."""
        ...

    def enforce_cancels(self) -> None:
        """Stop the workers of CANCELING and PAUSING jobs that did not stop on their own within
        the grace."""
        ...

    def adopt(self, job: Job) -> None:
        """Take over a live job whose scheduler died: re-attach to its workers if possible."""
        ...

    def shutdown(self) -> None:
        """The scheduler is stopping: stop or let go of the workers, as the executor needs."""
        ...
