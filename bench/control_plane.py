"""`make bench` control-plane section: dashtune's read API vs a bare Starlette endpoint.

For each backend (SQLite, PostgreSQL): start `dashtune serve` (no executor), create one
real job through the API, bulk-insert the rest of `--jobs` job rows in one workspace,
then load `GET /fine-tunes/{id}` and `GET /fine-tunes?page_no=N` (several N) with the
same client and concurrency as a bare Starlette app serving the very bytes dashtune
answered. Prints requests/s, p50 and p99 of both and the ratio dashtune/bare, and
create → RUNNING with a free slot (bench/start_latency.py, a fresh database, local executor)
and, on PostgreSQL, create → validated by a `dashtune scheduler` in another process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path

import httpx
import psutil
import psycopg
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from tests.conftest import Server, free_port, start_server, stop_server

from bench import load, seed, start_latency
from dashtune.config import Settings

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Options:
    jobs: int
    pages: list[int]
    page_size: int
    concurrency: int
    duration: int
    warmup: int
    client: str
    backends: list[str]
    pg_admin: str
    starts: int

    def command(self, client: str) -> str:
        """The command line that reproduces these figures."""
        return (
            f".venv/bin/python -m bench control_plane --jobs {self.jobs} "
            f"--pages {','.join(map(str, self.pages))} --page-size {self.page_size} "
            f"--concurrency {self.concurrency} --duration {self.duration} "
            f"--warmup {self.warmup} --client {client} --backends {','.join(self.backends)} "
            f"--starts {self.starts}"
        )


@dataclass(frozen=True)
class Target:
    label: str
    path: str
    page_no: int | None = None
    filtered: bool = False
    concurrency: int | None = None  # None: the --concurrency of the run


@dataclass(frozen=True)
class Row:
    target: Target
    dashtune: load.LoadResult
    bare: load.LoadResult
    dashtune_cpu_ms: float  # server CPU per request
    bare_cpu_ms: float


@dataclass
class BackendRun:
    backend: str
    db_version: str
    seed_s: float
    rows: list[Row]
    service_ms: dict[int, float]  # page_no -> median of job_reads.page() called in-process
    model_ms: dict[int, float]  # the same with model= (every job has that base model)
    start: start_latency.StartLatency | None = None
    notify_s: list[float] | None = None  # PostgreSQL: create -> validated by another process


def _ints(value: str) -> list[int]:
    return [int(x) for x in value.split(",") if x.strip()]


def _options(args: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m bench control_plane", description=__doc__)
    p.add_argument("--jobs", type=int, default=100_000, help="jobs in the workspace")
    p.add_argument("--pages", type=_ints, default=[1, 100, 5000, 10000], help="page_no list")
    p.add_argument("--page-size", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8, help="connections kept busy")
    p.add_argument("--duration", type=int, default=3, help="seconds measured per endpoint")
    p.add_argument("--warmup", type=int, default=1, help="seconds of load discarded first")
    p.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    p.add_argument("--backends", type=lambda v: v.split(","), default=["sqlite", "postgres"])
    p.add_argument(
        "--pg-admin",
        default=os.environ.get("DASHTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
        help="PostgreSQL admin URL; a fresh database is created beside it and dropped after",
    )
    p.add_argument("--starts", type=int, default=5, help="create -> RUNNING samples (0: skip)")
    ns, _ = p.parse_known_args(args)
    last = max(1, -(-ns.jobs // ns.page_size))
    pages = sorted({min(max(1, n), last) for n in ns.pages})
    return Options(
        ns.jobs,
        pages,
        ns.page_size,
        ns.concurrency,
        ns.duration,
        ns.warmup,
        ns.client,
        ns.backends,
        ns.pg_admin,
        ns.starts,
    )


@contextmanager
def _database(backend: str, pg_admin: str) -> Iterator[str]:
    """'' (SQLite in the data dir) or the URL of a fresh PostgreSQL database, dropped after."""
    if backend == "sqlite":
        yield ""
        return
    if backend != "postgres":
        raise ValueError(f"unknown backend {backend!r}: sqlite or postgres")
    name = f"dashtune_bench_{secrets.token_hex(4)}"
    with psycopg.connect(pg_admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield pg_admin.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(pg_admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _db_version(backend: str, url: str) -> str:
    if backend == "sqlite":
        return f"SQLite {sqlite3.sqlite_version} (WAL)"
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return f"PostgreSQL {row[0] if row else '?'}"


def _targets(job_id: str, opts: Options) -> list[Target]:
    size = opts.page_size
    out = [Target("GET /fine-tunes/{id}", f"/api/v1/fine-tunes/{job_id}")]
    out += [
        Target(
            f"GET /fine-tunes?page_no={n}", f"/api/v1/fine-tunes?page_no={n}&page_size={size}", n
        )
        for n in opts.pages
    ]
    # The model= filter (every job here has the same base model): first and last page.
    out += [
        Target(
            f"GET /fine-tunes?model=…&page_no={n}",
            f"/api/v1/fine-tunes?page_no={n}&page_size={size}&model={seed.MODEL}",
            n,
            True,
        )
        for n in sorted({opts.pages[0], opts.pages[-1]})
    ]
    return out


def _capture(srv: Server, targets: list[Target], job_id: str, opts: Options) -> dict[str, str]:
    """One real answer per target; checks it is the job or the page it should be."""
    bodies: dict[str, str] = {}
    with httpx.Client(base_url=srv.base, headers=_auth(srv), timeout=60) as c:
        for t in targets:
            r = c.get(t.path)
            if r.status_code != 200:
                raise RuntimeError(f"{t.path}: {r.status_code} {r.text[:300]}")
            out = r.json()["output"]
            got: object
            want: object
            if t.page_no is None:
                got, want = out["job_id"], job_id
            else:
                got = (out["total"], len(out["jobs"]))
                want = (
                    opts.jobs,
                    min(opts.page_size, opts.jobs - (t.page_no - 1) * opts.page_size),
                )
            if got != want:
                raise RuntimeError(f"{t.path}: got {got}, expected {want}")
            bodies[t.path] = r.content.decode()
    return bodies


def _auth(srv: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {srv.key}"}


@contextmanager
def _bare_server(workdir: Path, bodies: dict[str, str]) -> Iterator[tuple[str, int]]:
    """Run bench/bare_app.py serving `bodies`; yields its base URL and process id."""
    path = workdir / "bare-bodies.json"
    path.write_text(json.dumps(bodies))
    port = free_port()
    log_path = workdir / "bare.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bare_app",
                "--port",
                str(port),
                "--bodies",
                str(path),
                "--nice",
                str(Settings().api_nice),  # what the dashtune server runs at
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        first = next(iter(bodies))
        while True:
            if proc.poll() is not None:
                raise RuntimeError("bare app exited:\n" + log_path.read_text())
            try:
                if httpx.get(base + first, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("bare app did not start:\n" + log_path.read_text())
            time.sleep(0.1)
        for p, body in bodies.items():
            if httpx.get(base + p, timeout=10).content != body.encode():
                raise RuntimeError(f"bare app does not serve dashtune's bytes for {p}")
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _service_page_ms(
    srv: Server, pages: list[int], page_size: int, model: str | None = None
) -> dict[int, float]:
    """Median ms of `job_reads.signed_page` per page_no (the read the API's fast path makes
    for a list page), called in this process, pages interleaved.

    No HTTP and no other load in between: whether the page's own cost grows with page_no,
    without the noise of a 2-core machine under wrk.
    """
    import asyncio

    from dashtune.services import job_reads
    from dashtune.services.tenancy import authenticate
    from dashtune.store.driver_reads import driver_reads

    rt = srv.runtime()
    reads = driver_reads(rt.db)

    async def measure() -> dict[int, list[float]]:
        who = authenticate(rt, f"Bearer {srv.key}", None)
        times: dict[int, list[float]] = {n: [] for n in pages}
        for _ in range(100):
            for n in pages:
                t0 = time.perf_counter()
                await job_reads.signed_page(reads, who, n, page_size, model)
                times[n].append(time.perf_counter() - t0)
        await reads.close()
        return times

    try:
        times = asyncio.run(measure())
    finally:
        rt.close()
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def _drain(pid: int, timeout: float = 60.0) -> None:
    """Wait until the server is idle: a client that stops leaves requests running there."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while proc.cpu_percent(interval=0.25) > 15 and time.monotonic() < deadline:
        pass


def _measure(
    client: str, url: str, headers: dict[str, str], opts: Options, t: Target, pid: int
) -> tuple[load.LoadResult, float]:
    """Warm up, let the server go idle, then measure; the server is idle again on return.

    Also returns the server process's CPU ms per request in the window (all its threads):
    less swayed by other work on the machine than requests/s."""
    conc = t.concurrency or opts.concurrency
    if opts.warmup > 0:
        load.measure(client, url, headers, concurrency=conc, seconds=opts.warmup)
        _drain(pid)
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    result = load.measure(client, url, headers, concurrency=conc, seconds=opts.duration)
    after = proc.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    _drain(pid)
    return result, 1e3 * cpu / result.requests if result.requests else float("nan")


def _bench_backend(backend: str, opts: Options, client: str, console: Console) -> BackendRun:
    with (
        tempfile.TemporaryDirectory(prefix="dashtune-bench-") as d,
        _database(backend, opts.pg_admin) as url,
    ):
        workdir = Path(d)
        srv = start_server(
            workdir / "server", url, DASHTUNE_EXECUTOR="none", DASHTUNE_SERVING="false"
        )
        try:
            if not srv.key:
                raise RuntimeError("no API key in the server log:\n" + srv.log_text())
            version = _db_version(backend, url)
            job_id = seed.real_job(srv)
            seed_s = seed.bulk_jobs(srv, job_id, opts.jobs)
            console.print(
                f"[dim]{backend}: seeded {opts.jobs - 1:,} job rows in {seed_s:.1f} s"
                f" (+1 created through the API: {job_id})[/dim]"
            )
            targets = _targets(job_id, opts)
            bodies = _capture(srv, targets, job_id, opts)
            service_ms = _service_page_ms(srv, opts.pages, opts.page_size)
            model_ms = _service_page_ms(srv, opts.pages, opts.page_size, seed.MODEL)
            rows = []
            with _bare_server(workdir, bodies) as (bare_base, bare_pid):
                for t in targets:
                    dash, dash_cpu = _measure(
                        client, srv.base + t.path, _auth(srv), opts, t, srv.proc.pid
                    )
                    bare, bare_cpu = _measure(
                        client, bare_base + t.path, _auth(srv), opts, t, bare_pid
                    )
                    rows.append(Row(t, dash, bare, dash_cpu, bare_cpu))
                    console.print(
                        f"[dim]{backend}: {t.label}: {dash.rps:,.0f} req/s "
                        f"(bare {bare.rps:,.0f})[/dim]"
                    )
            return BackendRun(backend, version, seed_s, rows, service_ms, model_ms)
        finally:
            stop_server(srv)


def _versions() -> str:
    pkgs = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "pydantic", "psycopg")
    return ", ".join(f"{p} {metadata.version(p)}" for p in pkgs)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _busy_elsewhere() -> float:
    """Percent of all CPUs busy over one second, before our servers start: other work skews us."""
    return float(psutil.cpu_percent(interval=1.0))


def _facts(opts: Options, client: str, runs: list[BackendRun], busy: float) -> Table:
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    http = "httptools" if find_spec("httptools") else "h11"
    if client == "wrk":
        tool = f"{load.wrk_version()}, -t1 -c{opts.concurrency}"
    else:
        tool = f"httpx {metadata.version('httpx')} AsyncClient, {opts.concurrency} connections"
    t = Table(title="machine and setup", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row(
        "cpu",
        f"{os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"{_cpu_model()}, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM",
    )
    t.add_row("os / python", f"{platform.platform()} / Python {platform.python_version()}")
    t.add_row("databases", "; ".join(f"{r.db_version} (seed {r.seed_s:.1f} s)" for r in runs))
    t.add_row("server", f"1 uvicorn process, {loop} + {http}, log_level=warning, same flags both")
    t.add_row("packages", _versions())
    t.add_row(
        "client",
        f"{escape(tool)}; {opts.warmup} s warm-up + {opts.duration} s per endpoint, "
        "same client and concurrency for dashtune and bare",
    )
    load1, _, _ = os.getloadavg()
    t.add_row("other load", f"{busy:.0f}% CPU busy before start; load average {load1:.2f} at end")
    t.add_row("data", f"{opts.jobs:,} jobs in one workspace, page_size={opts.page_size}")
    t.add_row("reproduce", opts.command(client))
    return t


def _ms(x: float) -> str:
    return f"{x:.2f}" if x > 0 else "-"  # no request completed (or NaN)


def _ratio(a: float, b: float, fmt: str) -> str:
    return fmt.format(a / b) if a > 0 and b > 0 else "-"


def _results(runs: list[BackendRun], opts: Options) -> Table:
    t = Table(
        title="dashtune vs bare Starlette serving the same JSON bytes, "
        f"{opts.concurrency} connections unless marked"
    )
    for col in (
        "backend",
        "endpoint",
        "dashtune req/s",
        "p50 ms",
        "p99 ms",
        "bare req/s",
        "p50 ms",
        "p99 ms",
        "req/s d/b",
        "p50 d/b",
        "CPU ms/req",
        "bare CPU ms/req",
    ):
        t.add_column(col, justify="left" if col in ("backend", "endpoint") else "right")
    for run in runs:
        for i, r in enumerate(run.rows):
            d, b = r.dashtune, r.bare
            t.add_row(
                run.backend if i == 0 else "",
                r.target.label,
                f"{d.rps:,.0f}",
                _ms(d.p50_ms),
                _ms(d.p99_ms),
                f"{b.rps:,.0f}",
                _ms(b.p50_ms),
                _ms(b.p99_ms),
                _ratio(d.rps, b.rps, "{:.2f}"),
                _ratio(d.p50_ms, b.p50_ms, "{:.1f}×"),
                _ms(r.dashtune_cpu_ms),
                _ms(r.bare_cpu_ms),
                end_section=i == len(run.rows) - 1,
            )
    return t


def _pages(runs: list[BackendRun]) -> Table:
    t = Table(title="dashtune list latency by page_no (unfiltered: a rank range)")
    t.add_column("page_no", justify="right")
    for run in runs:
        for col in ("req/s", "p50 ms", "p99 ms", "svc ms"):
            t.add_column(f"{run.backend} {col}", justify="right")
    by_page: dict[int, list[str]] = {}
    for run in runs:
        for r in run.rows:
            n = r.target.page_no
            if n is not None and not r.target.filtered:
                d = r.dashtune
                by_page.setdefault(n, []).extend(
                    [f"{d.rps:,.0f}", _ms(d.p50_ms), _ms(d.p99_ms), _ms(run.service_ms[n])]
                )
    for page_no, cells in sorted(by_page.items()):
        t.add_row(str(page_no), *cells)
    spread = []
    for run in runs:
        pages = [r for r in run.rows if r.target.page_no and not r.target.filtered]
        dash = [r.dashtune.p50_ms for r in pages]
        bare = [r.bare.p50_ms for r in pages]
        svc = list(run.service_ms.values())
        if pages and min(dash) > 0 and min(bare) > 0:
            spread.append(
                f"{run.backend} HTTP {max(dash) / min(dash):.2f} (bare "
                f"{max(bare) / min(bare):.2f}), job_reads.signed_page() {max(svc) / min(svc):.2f}"
            )
    # The bare server's bodies do not depend on page_no: its spread is the machine's noise.
    t.caption = (
        "max/min across pages — "
        + "; ".join(spread)
        + ". svc = job_reads.signed_page(): median of 100 "
        "in-process calls, pages interleaved, no HTTP."
    )
    return t


def _filtered(runs: list[BackendRun]) -> Table:
    """The model= list at its first and last page: the last page's cost over the first's."""
    t = Table(title="model=-filtered list: last page vs page 1 (a model_rank range)")
    for col in ("backend", "page_no", "req/s", "p50 ms", "svc ms", "p50 / page 1", "svc / page 1"):
        t.add_column(col, justify="left" if col == "backend" else "right")
    for run in runs:
        rows = sorted(
            (r for r in run.rows if r.target.filtered), key=lambda r: r.target.page_no or 0
        )
        if not rows:
            continue
        first = rows[0]
        svc0 = run.model_ms[first.target.page_no or 1]
        for r in rows:
            n = r.target.page_no or 1
            t.add_row(
                run.backend,
                str(n),
                f"{r.dashtune.rps:,.0f}",
                _ms(r.dashtune.p50_ms),
                _ms(run.model_ms[n]),
                _ratio(r.dashtune.p50_ms, first.dashtune.p50_ms, "{:.2f}"),
                _ratio(run.model_ms[n], svc0, "{:.2f}"),
            )
    t.caption = "svc = job_reads.signed_page(..., model): median of 100 in-process calls, no HTTP."
    return t


def _starts(runs: list[BackendRun]) -> Table:
    t = Table(title="create -> RUNNING with a free slot (POST sent -> GET answers RUNNING)")
    for col in ("backend", "samples", "median s", "worst s"):
        t.add_column(col, justify="left" if col == "backend" else "right")
    for r in runs:
        if r.start is not None:
            t.add_row(
                r.backend,
                str(len(r.start.seconds)),
                f"{r.start.median:.3f}",
                f"{r.start.worst:.3f}",
            )
        if r.notify_s:
            t.add_row(
                f"{r.backend}, scheduler in another process (tick 10 s): create -> QUEUING",
                str(len(r.notify_s)),
                f"{statistics.median(r.notify_s):.3f}",
                f"{max(r.notify_s):.3f}",
            )
    return t


def run(args: list[str]) -> None:
    """Seed, measure and print the control-plane tables for every backend asked for."""
    opts = _options(args)
    console = Console() if sys.stdout.isatty() else Console(width=160)
    client = load.choose_client(opts.client)
    busy = _busy_elsewhere()
    if busy > 20:
        console.print(
            f"[yellow]{busy:.0f}% of the CPUs are busy with other work: "
            "figures will be low and noisy.[/yellow]"
        )
    if client != "wrk":
        why = "asked for" if opts.client == "python" else "wrk unavailable"
        console.print(
            f"[yellow]httpx client ({why}): it saturates before the bare server "
            "does, so the ratios understate dashtune's overhead.[/yellow]"
        )
    runs = [_bench_backend(b, opts, client, console) for b in opts.backends]
    if opts.starts > 0:
        for r in runs:
            with _database(r.backend, opts.pg_admin) as url:
                r.start = start_latency.measure(url, opts.starts)
            console.print(
                f"[dim]{r.backend}: create -> RUNNING "
                f"{', '.join(f'{x:.3f}' for x in r.start.seconds)} s[/dim]"
            )
            if r.backend == "postgres":
                with _database(r.backend, opts.pg_admin) as url:
                    r.notify_s = start_latency.across_processes(url, opts.starts)
    console.print(_facts(opts, client, runs, busy))
    console.print(_results(runs, opts))
    console.print(_pages(runs))
    console.print(_filtered(runs))
    console.print(_starts(runs))
    bad = [
        (run.backend, r.target.label)
        for run in runs
        for r in run.rows
        if r.dashtune.errors or r.bare.errors
    ]
    if bad:
        console.print(f"[red]errors or non-2xx answers during load: {bad}[/red]")
