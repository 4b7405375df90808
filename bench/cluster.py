"""`make bench` cluster section: the Ray executor vs the local one, 2 Ray nodes vs 1.

One run, side by side:
- jobs/hour of the same job mix (N short tiny-model SFT jobs) on a Ray cluster with one
  worker node, then with two (1 CPU each: one single-thread job per node at a time);
- added latency of the Ray executor over the local one: create -> worker process started
  (the worker's own "started" log line) and cancel -> worker process gone.
The head node has 0 CPUs (it trains nothing). Needs PostgreSQL (the Ray executor does).
Small sizes: `python -m bench cluster --jobs 4 --latency-runs 2`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from rich.console import Console
from rich.table import Table
from tests.cluster.raycluster import start_cluster
from tests.conftest import PG_ADMIN, Server, start_server, stop_server
from tests.e2e.conftest import rows_for, write_jsonl

SHORT = {"max_length": 64, "n_epochs": 1, "batch_size": 4}
LONG = {"max_length": 64, "n_epochs": 50}
STARTED = re.compile(r"worker 0 of \d+ started on .*, pid (\d+)")


def _db() -> str:
    name = f"dashtune_bench_{os.getpid()}_{int(time.time())}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


def _upload(c: httpx.Client, tmp: Path, rows: int) -> str:
    raw = write_jsonl(tmp / f"r{rows}.jsonl", rows_for("sft", rows)).read_bytes()
    r = c.post("/files", files={"files": (f"r{rows}.jsonl", raw)})
    return str(r.json()["data"]["uploaded_files"][0]["file_id"])


def _create(c: httpx.Client, fid: str, hp: dict[str, Any]) -> str:
    body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp}
    return str(c.post("/fine-tunes", json=body).json()["output"]["job_id"])


def _status(c: httpx.Client, job_id: str) -> str:
    return str(c.get(f"/fine-tunes/{job_id}").json()["output"]["status"])


def _started_pid(c: httpx.Client, job_id: str) -> int | None:
    logs = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 200}).json()["output"]["logs"]
    for line in logs:
        if m := STARTED.search(line):
            return int(m.group(1))
    return None


def _throughput(srv: Server, tmp: Path, n: int) -> float:
    """Jobs per hour: n short jobs created at once, until the last one ends."""
    with srv.http() as c:
        fid = _upload(c, tmp, 32)
        t0 = time.perf_counter()
        ids = [_create(c, fid, SHORT) for _ in range(n)]
        while any(_status(c, j) not in ("SUCCEEDED", "FAILED", "CANCELED") for j in ids):
            time.sleep(0.5)
        wall = time.perf_counter() - t0
        bad = [j for j in ids if _status(c, j) != "SUCCEEDED"]
        if bad:
            raise RuntimeError(f"jobs did not succeed: {bad}")
    return n / wall * 3600


def _latency(srv: Server, tmp: Path, runs: int) -> tuple[list[float], list[float]]:
    """create -> worker started, and cancel -> worker process gone, `runs` times each."""
    start, gone = [], []
    with srv.http() as c:
        fid = _upload(c, tmp, 256)
        for _ in range(runs):
            t0 = time.perf_counter()
            job_id = _create(c, fid, LONG)
            while (pid := _started_pid(c, job_id)) is None:
                time.sleep(0.02)
            start.append(time.perf_counter() - t0)
            while c.get(f"/fine-tunes/{job_id}").json()["output"]["progress"] <= 0:
                time.sleep(0.1)
            t1 = time.perf_counter()
            c.post(f"/fine-tunes/{job_id}/cancel")
            while psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie":
                time.sleep(0.01)
            gone.append(time.perf_counter() - t1)
            while _status(c, job_id) != "CANCELED":
                time.sleep(0.1)
    return start, gone


def run(args: list[str]) -> None:
    p = argparse.ArgumentParser(prog="bench cluster")
    p.add_argument("--jobs", type=int, default=6, help="jobs in the throughput mix")
    p.add_argument("--latency-runs", type=int, default=3)
    opts, _ = p.parse_known_args(args)
    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    cluster = start_cluster(Path(f"/tmp/dtbench-{os.getpid()}"), head_cpus=0)
    servers: list[Server] = []
    try:
        cluster.add_node("node_b", num_cpus=1)
        env = {
            "DASHTUNE_EXECUTOR": "ray",
            "DASHTUNE_RAY_ADDRESS": cluster.gcs_address,
            "DASHTUNE_RAY_DASHBOARD_URL": cluster.dashboard_url,
            "DASHTUNE_HEARTBEAT_INTERVAL": "1",
            "DASHTUNE_SERVING": "false",
        }
        ray_srv = start_server(tmp / "ray", _db(), **env)
        servers.append(ray_srv)
        time.sleep(2)  # the scheduler publishes the 1-node inventory
        one = _throughput(ray_srv, tmp, opts.jobs)
        cluster.add_node("node_c", num_cpus=1)
        time.sleep(3)
        two = _throughput(ray_srv, tmp, opts.jobs)
        ray_start, ray_gone = _latency(ray_srv, tmp, opts.latency_runs)
        local = start_server(
            tmp / "local",
            _db(),
            DASHTUNE_EXECUTOR="local",
            DASHTUNE_SERVING="false",
            DASHTUNE_HEARTBEAT_INTERVAL="1",
        )
        servers.append(local)
        loc_start, loc_gone = _latency(local, tmp, opts.latency_runs)
    finally:
        for s in servers:
            stop_server(s)
        cluster.stop()

    t = Table(title=f"cluster: {opts.jobs} short jobs; latency medians of {opts.latency_runs}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_column("baseline", justify="right")
    t.add_column("ratio", justify="right")
    t.add_row("jobs/hour, 2 Ray nodes vs 1", f"{two:.0f}", f"{one:.0f}", f"{two / one:.2f}x")
    med = statistics.median
    t.add_row(
        "create -> worker started (s), ray vs local",
        f"{med(ray_start):.2f}",
        f"{med(loc_start):.2f}",
        f"+{med(ray_start) - med(loc_start):.2f} s",
    )
    t.add_row(
        "cancel -> worker gone (s), ray vs local",
        f"{med(ray_gone):.2f}",
        f"{med(loc_gone):.2f}",
        f"+{med(ray_gone) - med(loc_gone):.2f} s",
    )
    console.print(t)
    console.print(
        f"[dim]Both Ray nodes share this machine's {os.cpu_count()} cores (and whatever else "
        "runs on it): the ratio shows how the executor spreads jobs, not a real cluster's "
        "capacity.[/dim]"
    )
