"""`make bench` section `load`: the API and training under many pollers and job streams.

For each `--nice` value (DASHTUNE_API_NICE; default 5, the server's default): start
`dashtune serve` (SQLite, local executor), start a long training job on the tiny model,
then measure, one after the other in the same run,

- idle: training speed with nothing else calling the API;
- pollers: `--pollers` clients polling `GET /fine-tunes/{id}` in a closed loop (their p50
  and p99 are the API's latency), the baseline of
- pollers + streams: the same pollers while `--streams` SSE streams of the same job stay
  open; and training speed in each window;
- few pollers + many streams (`--heavy-pollers`, `--heavy-streams`; default 50 + 200,
  the shape of the probe that found streams replaying whole logs): p99 with 200 streams
  open, and training speed beside them;
- the API process's RSS and open file descriptors before the load, and again once every
  client has left (a leak would show as growth).

The clients run at `--client-nice` (19 by default) during the windows: a user's clients run
on other machines, so what the windows measure is the API's own cost to training on its
host, not the bench's clients competing for the same cores (`--client-nice 0` for that).

Training speed comes from the job's own metric rows: seconds per step (wall time between
logged steps) and the trainer's tokens/s (median of the rows logged in the window), so it
includes whatever the API takes from the worker's CPU. The streams are read by a process
of their own, which also counts their data events: they share the API process's one
change feed (api/job_feed.py), so 50 streams cost one poll per interval, not 100.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import rows_for, upload_rows, wait_for


@dataclass(frozen=True)
class Options:
    pollers: int
    streams: int
    seconds: int
    nices: list[int]
    heavy_pollers: int = 50
    heavy_streams: int = 200
    client_nice: int = 19

    def command(self) -> str:
        return (
            f".venv/bin/python -m bench load --pollers {self.pollers} --streams {self.streams} "
            f"--heavy-pollers {self.heavy_pollers} --heavy-streams {self.heavy_streams} "
            f"--client-nice {self.client_nice} "
            f"--seconds {self.seconds} --nice {','.join(map(str, self.nices))}"
        )


@dataclass
class Window:
    s_per_step: float
    tokens_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    requests: int = 0
    errors: int = 0
    streams_open: int = 0
    stream_events: int = 0


@dataclass
class Figures:
    idle: Window
    pollers: Window
    streams: Window
    heavy: Window | None = None  # few pollers + many streams (None: --heavy-streams 0)
    rss_before: int = 0
    rss_between: int = 0  # after the pollers' window, once they left
    rss_after: int = 0  # after the pollers + streams window, once all left
    fds_before: int = 0
    fds_between: int = 0
    fds_after: int = 0
    rss_heavy: int = 0  # once the heavy window's clients left
    fds_heavy: int = 0


def _options(args: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="bench load")
    p.add_argument("--pollers", type=int, default=200)
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--nice", default="5", help="DASHTUNE_API_NICE values, comma-separated")
    p.add_argument("--heavy-pollers", type=int, default=50)
    p.add_argument("--heavy-streams", type=int, default=200, help="0: no heavy-streams window")
    p.add_argument(
        "--client-nice",
        type=int,
        default=19,
        help="niceness of the load's clients during the windows (0: compete with training)",
    )
    ns, _ = p.parse_known_args(args)
    nices = [int(x) for x in ns.nice.split(",")]
    return Options(
        ns.pollers,
        ns.streams,
        ns.seconds,
        nices,
        ns.heavy_pollers,
        ns.heavy_streams,
        ns.client_nice,
    )


def _step(srv: Server, job_id: str) -> tuple[float, int, int]:
    """(time of the newest metric row, its step, its id) of the job."""
    from dashtune.store.tables import JobMetric

    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            row = s.execute(
                select(JobMetric.created_at, JobMetric.step, JobMetric.id)
                .where(JobMetric.job_id == job_id)
                .order_by(JobMetric.id.desc())
                .limit(1)
            ).first()
    finally:
        rt.close()
    return (row.created_at.timestamp(), row.step, row.id) if row else (0.0, 0, 0)


def _tokens_per_s(srv: Server, job_id: str, after_id: int, upto_id: int) -> float:
    """Median of the trainer's tokens/s over the metric rows logged in (after_id, upto_id]."""
    from dashtune.store.tables import JobMetric

    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            rows = s.scalars(
                select(JobMetric.values).where(
                    JobMetric.job_id == job_id, JobMetric.id > after_id, JobMetric.id <= upto_id
                )
            ).all()
    finally:
        rt.close()
    speeds = [float(v["tokens_per_second"]) for v in rows if v.get("tokens_per_second")]
    return statistics.median(speeds) if speeds else float("nan")


async def _speed(srv: Server, job_id: str, seconds: float) -> tuple[float, float]:
    """(seconds per step, tokens/s) of the training job over the next `seconds`."""
    t0, s0, id0 = await asyncio.to_thread(_step, srv, job_id)
    await asyncio.sleep(seconds)
    t1, s1, id1 = await asyncio.to_thread(_step, srv, job_id)
    per_step = (t1 - t0) / (s1 - s0) if s1 > s0 else float("nan")
    return per_step, await asyncio.to_thread(_tokens_per_s, srv, job_id, id0, id1)


def _hold_streams(url: str, headers: dict[str, str], n: int, seconds: float, out: Any) -> None:
    """In a process of its own (so that reading them does not slow the pollers' client):
    keep `n` streams of `url` open for `seconds`; put (opened, data events, errors)."""

    async def main() -> tuple[int, int, int]:
        opened = events = errors = 0
        limits = httpx.Limits(max_connections=n + 5)
        async with httpx.AsyncClient(headers=headers, timeout=None, limits=limits) as client:

            async def one() -> None:
                nonlocal opened, events, errors
                try:
                    async with client.stream("GET", url) as r:
                        opened += 1
                        async for line in r.aiter_lines():
                            events += line.startswith("data:")
                except httpx.HTTPError:
                    errors += 1

            tasks = [asyncio.create_task(one()) for _ in range(n)]
            await asyncio.sleep(seconds)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return opened, events, errors

    out.put(asyncio.run(main()))


async def _load(srv: Server, job_id: str, opts: Options, n_streams: int, n_pollers: int) -> Window:
    headers = {"Authorization": f"Bearer {srv.key}"}
    url = f"{srv.api}/fine-tunes/{job_id}"
    limits = httpx.Limits(max_connections=n_pollers + 10)
    latencies: list[float] = []
    errors = 0
    stop = asyncio.Event()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    holder = None
    if n_streams:
        holder = ctx.Process(
            target=_hold_streams,
            args=(url + "/stream", headers, n_streams, opts.seconds + 6, results),
        )
        holder.start()
        await asyncio.sleep(4)  # let the streams open before the window starts
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:

        async def poller() -> None:
            nonlocal errors
            while not stop.is_set():
                t = time.perf_counter()
                try:
                    ok = (await client.get(url)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        pollers = [asyncio.create_task(poller()) for _ in range(n_pollers)]
        per_step, tokens = await _speed(srv, job_id, opts.seconds)
        stop.set()
        await asyncio.gather(*pollers)
    opened = events = 0
    if holder is not None:
        opened, events, stream_errors = await asyncio.to_thread(results.get, True, 120)
        holder.join(timeout=30)
        errors += stream_errors
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return Window(
        per_step, tokens, cuts[49] * 1e3, cuts[98] * 1e3, len(latencies), errors, opened, events
    )


@contextlib.contextmanager
def _niced(value: int) -> Iterator[None]:
    """The load's clients at `value` niceness while they run: users' clients run on other
    machines, so on one host they should take CPU from neither the API nor training (the
    stream holder, spawned inside, inherits it). Restoring needs root; else it stays."""
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, max(before, value))
    try:
        yield
    finally:
        with contextlib.suppress(PermissionError):
            os.setpriority(os.PRIO_PROCESS, 0, before)


def _measure(tmp: Path, nice: int, opts: Options) -> Figures:
    srv = start_server(
        tmp / f"nice{nice}",
        "",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_SERVING="false",
        DASHTUNE_API_NICE=str(nice),
    )
    try:
        with srv.http() as c:
            fid = upload_rows(
                c, tmp, f"train{nice}.jsonl", rows_for("sft", 2048)
            )  # outlasts the windows
            hp = {"n_epochs": 100, "max_length": 64, "logging_steps": 2, "eval_steps": 10**6}
            hp |= {"save_strategy": "steps", "save_steps": 10**6}
            body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp}
            created = c.post("/fine-tunes", json=body)
            assert created.status_code == 200, created.text
            job_id = created.json()["output"]["job_id"]
            wait_for(c, job_id, lambda j: j["status"] == "RUNNING" and j["progress"] > 0, 180)
            time.sleep(2)
            api = psutil.Process(srv.proc.pid)
            rss0, fds0 = api.memory_info().rss, api.num_fds()
            idle = Window(*asyncio.run(_speed(srv, job_id, opts.seconds)))
            with _niced(opts.client_nice):
                pollers = asyncio.run(_load(srv, job_id, opts, 0, opts.pollers))
            # Every client has left: the pool's connections stay (a plateau), a leak grows
            # with each round.
            time.sleep(5)
            rss1, fds1 = api.memory_info().rss, api.num_fds()
            with _niced(opts.client_nice):
                streams = asyncio.run(_load(srv, job_id, opts, opts.streams, opts.pollers))
            time.sleep(5)
            rss2, fds2 = api.memory_info().rss, api.num_fds()
            heavy, rss3, fds3 = None, 0, 0
            if opts.heavy_streams:
                load = _load(srv, job_id, opts, opts.heavy_streams, opts.heavy_pollers)
                with _niced(opts.client_nice):
                    heavy = asyncio.run(load)
                time.sleep(5)
                rss3, fds3 = api.memory_info().rss, api.num_fds()
            c.post(f"/fine-tunes/{job_id}/cancel")
        return Figures(
            idle, pollers, streams, heavy, rss0, rss1, rss2, fds0, fds1, fds2, rss3, fds3
        )
    finally:
        stop_server(srv)


def run(args: list[str] | None = None) -> None:
    opts = _options(args or [])
    console = Console()
    console.print(
        f"[bold]load[/bold]: {opts.pollers} pollers of GET /fine-tunes/{{id}} + {opts.streams} "
        f"SSE streams of the same running job, {opts.seconds} s windows, SQLite, clients "
        f"at nice {opts.client_nice}"
    )
    results: dict[int, Figures] = {}
    with tempfile.TemporaryDirectory() as d:
        for nice in opts.nices:
            results[nice] = _measure(Path(d), nice, opts)
    table = Table(title="API latency and training speed, idle vs under load")
    table.add_column("metric")
    for nice in opts.nices:
        table.add_column(f"DASHTUNE_API_NICE={nice}", justify="right")
    mib = 2**20
    rows = [
        ("training tokens/s idle", lambda f: f"{f.idle.tokens_per_s:,.0f}"),
        ("training tokens/s, pollers", lambda f: f"{f.pollers.tokens_per_s:,.0f}"),
        ("training tokens/s, pollers + streams", lambda f: f"{f.streams.tokens_per_s:,.0f}"),
        (
            "ratio tokens/s (pollers + streams)/idle",
            lambda f: f"{f.streams.tokens_per_s / f.idle.tokens_per_s:.2f}",
        ),
        ("training s/step idle", lambda f: f"{f.idle.s_per_step:.3f}"),
        ("training s/step, pollers", lambda f: f"{f.pollers.s_per_step:.3f}"),
        ("training s/step, pollers + streams", lambda f: f"{f.streams.s_per_step:.3f}"),
        (
            "ratio training (pollers + streams)/idle",
            lambda f: f"{f.streams.s_per_step / f.idle.s_per_step:.2f}",
        ),
        ("API p50 ms, pollers", lambda f: f"{f.pollers.p50_ms:.1f}"),
        ("API p99 ms, pollers", lambda f: f"{f.pollers.p99_ms:.1f}"),
        ("API p50 ms, pollers + streams", lambda f: f"{f.streams.p50_ms:.1f}"),
        ("API p99 ms, pollers + streams", lambda f: f"{f.streams.p99_ms:.1f}"),
        (
            "ratio p99 (pollers + streams)/pollers",
            lambda f: f"{f.streams.p99_ms / f.pollers.p99_ms:.2f}",
        ),
        (
            "requests (pollers / + streams)",
            lambda f: f"{f.pollers.requests} / {f.streams.requests}",
        ),
        ("errors", lambda f: str(f.pollers.errors + f.streams.errors)),
        (
            "error rate",
            lambda f: (
                f"{(f.pollers.errors + f.streams.errors) / max(1, f.pollers.requests + f.streams.requests + f.pollers.errors + f.streams.errors):.4%}"
            ),
        ),
        (
            "API RSS MiB before / after pollers / after all",
            lambda f: (
                f"{f.rss_before / mib:.0f} / {f.rss_between / mib:.0f} / {f.rss_after / mib:.0f}"
            ),
        ),
        (
            "API open fds before / after pollers / after all",
            lambda f: f"{f.fds_before} / {f.fds_between} / {f.fds_after}",
        ),
        ("streams open", lambda f: str(f.streams.streams_open)),
        ("stream data events", lambda f: str(f.streams.stream_events)),
    ]
    if opts.heavy_streams:
        heavy = f"{opts.heavy_pollers} pollers + {opts.heavy_streams} streams"

        def h(f: Figures) -> Window:
            assert f.heavy is not None
            return f.heavy

        rows += [
            (f"training tokens/s, {heavy}", lambda f: f"{h(f).tokens_per_s:,.0f}"),
            (
                f"ratio tokens/s ({heavy})/idle",
                lambda f: f"{h(f).tokens_per_s / f.idle.tokens_per_s:.2f}",
            ),
            (f"API p50 / p99 ms, {heavy}", lambda f: f"{h(f).p50_ms:.1f} / {h(f).p99_ms:.1f}"),
            (f"requests / errors, {heavy}", lambda f: f"{h(f).requests} / {h(f).errors}"),
            (
                f"streams open / data events, {heavy}",
                lambda f: f"{h(f).streams_open} / {h(f).stream_events}",
            ),
            (
                "API RSS MiB / open fds after the heavy window",
                lambda f: f"{f.rss_heavy / mib:.0f} / {f.fds_heavy}",
            ),
        ]
    for label, cell in rows:
        table.add_row(label, *(cell(results[n]) for n in opts.nices))
    console.print(table)
    console.print(f"[dim]reproduce: {opts.command()}[/dim]")
