"""One 2-node Ray cluster per test session, two API replicas and schedulers on PostgreSQL.

The head node has no CPUs (it runs the GCS and the dashboard, no training), so each job
lands on `node_b` or `node_c` (1 CPU each: one single-thread job at a time per node).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.cluster.raycluster import RayCluster, start_cluster
from tests.conftest import BIN, Server, start_server, stop_server

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    # A short temp dir: Ray's socket paths must stay under 107 bytes.
    temp = Path(f"/tmp/dtray-{os.getpid()}")
    cluster = start_cluster(temp, head_cpus=0)
    try:
        cluster.add_node("node_b", num_cpus=1)
        cluster.add_node("node_c", num_cpus=1)
        wait_nodes(cluster, 3)
        yield cluster
    finally:
        cluster.stop()


def wait_nodes(cluster: RayCluster, n: int, timeout: float = 60) -> list[Any]:
    from ray.util.state import list_nodes

    deadline = time.monotonic() + timeout
    while True:
        alive = [x for x in list_nodes(address=cluster.dashboard_url) if x.state == "ALIVE"]
        if len(alive) >= n:
            return alive
        assert time.monotonic() < deadline, f"{len(alive)} of {n} Ray nodes alive"
        time.sleep(0.5)


def ray_env(cluster: RayCluster) -> dict[str, str]:
    return {
        "DASHTUNE_EXECUTOR": "ray",
        "DASHTUNE_RAY_ADDRESS": cluster.gcs_address,
        "DASHTUNE_RAY_DASHBOARD_URL": cluster.dashboard_url,
        "DASHTUNE_HEARTBEAT_INTERVAL": "1",
        "DASHTUNE_CANCEL_GRACE_SECONDS": "10",
        "DASHTUNE_SCHEDULER_LEASE_SECONDS": "6",
        "DASHTUNE_SERVING": "false",
        # A lost node fails its job here (the tests check how it ends); with retries the
        # job resumes elsewhere: test_ray.py's last test, on a server of its own.
        "DASHTUNE_MAX_ATTEMPTS": "1",
    }


@dataclass
class SchedulerProc:
    proc: subprocess.Popen[bytes]
    log_path: Path


def start_scheduler(data_dir: Path, database_url: str, name: str, **env: str) -> SchedulerProc:
    """`dashtune scheduler` alone; ready once it printed its id."""
    full = dict(os.environ)
    full.update({"DASHTUNE_DATABASE_URL": database_url, "DASHTUNE_DATA_DIR": str(data_dir)})
    full.update(env)
    log_path = data_dir / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dashtune"), "scheduler"], stdout=out, stderr=subprocess.STDOUT, env=full
        )
    deadline = time.monotonic() + 60
    while "Scheduler " not in log_path.read_text():
        assert proc.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.2)
    return SchedulerProc(proc, log_path)


def stop_scheduler(s: SchedulerProc) -> None:
    if s.proc.poll() is None:
        s.proc.terminate()
        try:
            s.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            s.proc.kill()


@dataclass
class Replicas:
    a: Server
    b: Server


@pytest.fixture(scope="session")
def replicas(
    ray_cluster: RayCluster, tmp_path_factory: pytest.TempPathFactory, database_factory
) -> Iterator[Replicas]:  # type: ignore[no-untyped-def]
    """Two `dashtune serve` replicas, each with its scheduler, on one PostgreSQL database
    and one data dir (on a cluster: storage every node mounts)."""
    data = tmp_path_factory.mktemp("cluster")
    url = database_factory("postgres", data)
    env = ray_env(ray_cluster)
    a = start_server(data, url, log_name="replica-a.log", **env)
    b = start_server(data, url, log_name="replica-b.log", **env)
    b.key = a.key  # one database: one set of users and keys
    try:
        yield Replicas(a, b)
    finally:
        stop_server(a)
        stop_server(b)


def worker_pids(c: httpx.Client, job_id: str) -> list[int]:
    """The pids the job's workers logged at start ("worker 0 of 1 started on ..., pid N")."""
    lines = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
    return [int(m.group(1)) for ln in lines if (m := re.search(r"started on .*, pid (\d+)", ln))]


def logs(c: httpx.Client, job_id: str) -> list[str]:
    out = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
    return [str(x) for x in out]


def wait_pid_gone(pid: int, timeout: float) -> float:
    t0 = time.monotonic()
    while psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        assert time.monotonic() - t0 < timeout, f"worker pid {pid} still alive"
        time.sleep(0.05)
    return time.monotonic() - t0
