"""Tells the scheduler there is work now, instead of letting it find the work next tick.

A create, a job that passed validation or a resume calls `notify()`; the scheduler's loop
waits on `wait(interval)`, so a job with a free slot starts at once and the interval is
only the bound for what nobody announced (a worker's exit, a lease to renew). Within one
process this is an event. Across processes on PostgreSQL the same announcement travels
as `NOTIFY dashtune_jobs` (sent in the creating transaction, so it arrives after the row
is visible); a `dashtune scheduler` elsewhere LISTENs (store/db.py `Database.listen`).
On SQLite another process learns of the job at its next tick (DASHTUNE_SCHEDULER_INTERVAL).
"""

from __future__ import annotations

import threading

CHANNEL = "dashtune_jobs"


class Wakeup:
    def __init__(self) -> None:
        self._event = threading.Event()

    def notify(self) -> None:
        """There is work: the waiting scheduler runs its next tick now."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep until notified or `timeout` seconds; True when notified."""
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke
