"""One change feed per API process for every open job stream.

Each stream used to poll the database on its own (two queries every half second, and a
replay of the job's whole log on open): 200 streams on one job were 800 queries a second
and hundreds of thousands of replayed lines. Here one task polls the watched jobs with
one query per interval, fetches each job's new log lines once into a bounded buffer,
and wakes the streams, which read from that buffer. Only a stream that asks for history
older than the buffer (`Last-Event-ID` or `?offset=`) reads the log itself, in pages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from dashtune.services import jobs
from dashtune.services.jobs import StreamState as Snapshot
from dashtune.services.runtime import Runtime

PAGE = 1000


@dataclass
class _Lines:
    """Contiguous recent log lines of one job: seq `first`, `first + 1`, ..."""

    first: int = 1
    lines: list[str] = field(default_factory=list)

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1


class JobFeed:
    def __init__(self, rt: Runtime, interval: float = 0.5, tail: int = 100) -> None:
        self.rt = rt
        self.interval = interval
        self.tail = tail
        self.keep = max(2 * PAGE, tail)
        self._watchers: dict[str, int] = {}
        self._snaps: dict[str, Snapshot | None] = {}
        self._buffers: dict[str, _Lines] = {}
        self._tick = 0
        self._changed: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[Watch]:
        """Follow `job_id` for the life of the block."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        try:
            yield Watch(self, job_id)
        finally:
            self._watchers[job_id] -= 1
            if not self._watchers[job_id]:
                del self._watchers[job_id]
                self._snaps.pop(job_id, None)
                self._buffers.pop(job_id, None)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._changed is not None
        while self._watchers:
            ids = list(self._watchers)
            try:
                snaps, fresh = await run_in_threadpool(self._poll, ids)
            except Exception:  # the database is down: streams wait, the next poll retries
                await asyncio.sleep(self.interval)
                continue
            for job_id in ids:
                if job_id in self._watchers:
                    self._snaps[job_id] = snaps.get(job_id)
                    if job_id in fresh:
                        self._buffers[job_id] = fresh[job_id]
            async with self._changed:
                self._tick += 1
                self._changed.notify_all()
            await asyncio.sleep(self.interval)

    def _poll(self, ids: list[str]) -> tuple[dict[str, Snapshot], dict[str, _Lines]]:
        """One query for every watched job, then new lines of the jobs whose log grew."""
        snaps = jobs.stream_states(self.rt, ids)
        fresh: dict[str, _Lines] = {}
        for job_id, snap in snaps.items():
            buf = self._buffers.get(job_id)
            if buf is None:  # first sight of the job: only its tail is buffered
                start = max(1, snap.log_count - self.tail + 1)
                buf = _Lines(first=start)
            if buf.last >= snap.log_count:
                continue
            new = _Lines(buf.first, list(buf.lines))
            while new.last < snap.log_count:
                page = jobs.log_lines(self.rt, job_id, new.last, PAGE)
                if not page:
                    break
                new.lines += [line for _, line in page]
            if len(new.lines) > 2 * self.keep:
                cut = len(new.lines) - self.keep
                new = _Lines(new.first + cut, new.lines[cut:])
            fresh[job_id] = new
        return snaps, fresh


class Watch:
    """One stream's view of the feed."""

    def __init__(self, feed: JobFeed, job_id: str) -> None:
        self.feed, self.job_id = feed, job_id
        self._seen_tick = feed._tick

    async def next(self) -> Snapshot | None:
        """The job's state after the next poll that saw it (None: the job is gone)."""
        changed = self.feed._changed
        assert changed is not None
        async with changed:
            await changed.wait_for(
                lambda: self.feed._tick > self._seen_tick and self.job_id in self.feed._snaps
            )
            self._seen_tick = self.feed._tick
        return self.feed._snaps.get(self.job_id)

    async def lines_after(self, seq: int, upto: int) -> list[tuple[int, str]]:
        """Lines after `seq` up to `upto`: from the shared buffer, else from the log."""
        buf = self.feed._buffers.get(self.job_id)
        if buf is not None and buf.first <= seq + 1 <= buf.last + 1:
            start = seq + 1 - buf.first
            end = min(upto, buf.last) - buf.first + 1
            return [(buf.first + i, buf.lines[i]) for i in range(start, end)]
        return await run_in_threadpool(
            jobs.log_lines, self.feed.rt, self.job_id, seq, min(PAGE, upto - seq)
        )
