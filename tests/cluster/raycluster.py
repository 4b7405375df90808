"""A Ray cluster of N nodes on this machine, started with `ray start` and stopped by PID.

Never `ray stop`: it is machine-wide and would kill other people's clusters. Each node
gets explicit CPUs, a custom resource naming it (`node_a`, `node_b`, ...) and free ports
below the ephemeral range; all nodes share one temp dir (Ray Jobs logs need that).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _port_block(n: int) -> int:
    """The first of n consecutive free ports in 20000-32000 (below the ephemeral range)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        if all(_port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port block")


@dataclass
class Node:
    name: str  # the custom resource that pins work to it: {"node_a": 1}
    raylet_pid: int
    node_id: str = ""


@dataclass
class RayCluster:
    temp_dir: Path
    gcs_address: str
    dashboard_url: str
    nodes: list[Node] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def add_node(self, name: str, num_cpus: int, num_gpus: int = 0) -> Node:
        """A worker node; tried again (other ports) if it fails to register in time."""
        for attempt in range(3):
            try:
                return self._add_node(name, num_cpus, num_gpus)
            except (RuntimeError, subprocess.TimeoutExpired):
                if attempt == 2:
                    raise
                time.sleep(5)
        raise AssertionError("unreachable")

    def _add_node(self, name: str, num_cpus: int, num_gpus: int) -> Node:
        base = _port_block(210)
        cmd = [
            str(BIN / "ray"),
            "start",
            f"--address={self.gcs_address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            f'--resources={{"{name}": 1}}',
            f"--temp-dir={self.temp_dir}",
            f"--dashboard-agent-listen-port={base}",
            f"--dashboard-agent-grpc-port={base + 1}",
            f"--runtime-env-agent-port={base + 2}",
            f"--metrics-export-port={base + 3}",
            f"--node-manager-port={base + 4}",
            f"--object-manager-port={base + 5}",
            f"--min-worker-port={base + 10}",
            f"--max-worker-port={base + 209}",
            "--disable-usage-stats",
            "--object-store-memory=200000000",
            "--memory=4000000000",
        ]
        before = set(_raylets(self.temp_dir))
        running = {p.pid for p in _ours(self.temp_dir)}
        try:
            _run(cmd, self.env, 120)
            pid = _wait_new_raylet(self.temp_dir, before)
        except BaseException:
            for p in _ours(self.temp_dir):  # what this attempt started, not the other nodes
                if p.pid not in running:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
            raise
        node = Node(name, pid)
        self.nodes.append(node)
        return node

    def kill_node(self, node: Node) -> None:
        """SIGKILL a node's raylet (a machine dying), then clean what it leaves behind."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.raylet_pid, signal.SIGKILL)
        self.nodes.remove(node)

    def stop(self) -> None:
        """Raylets first, GCS last, SIGKILL after a grace; then anything left on our temp dir."""
        procs = _ours(self.temp_dir)
        raylets = [p for p in procs if "raylet" in p.name()]
        others = [p for p in procs if p not in raylets]
        for group in (raylets, others):
            for p in group:
                with contextlib.suppress(psutil.Error):
                    p.terminate()
            _, alive = psutil.wait_procs(group, timeout=5)
            for p in alive:
                with contextlib.suppress(psutil.Error):
                    p.kill()
        for p in _ours(self.temp_dir):
            with contextlib.suppress(psutil.Error):
                p.kill()


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> None:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return ""


def _ours(temp_dir: Path) -> list[psutil.Process]:
    """Processes of this cluster: their command line names our temp dir (or session dir)."""
    mark = str(temp_dir)
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and mark in _cmdline(p)]


def _raylets(temp_dir: Path) -> list[int]:
    return [p.pid for p in _ours(temp_dir) if "raylet" in (p.name() or "")]


def _wait_new_raylet(temp_dir: Path, before: set[int], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = set(_raylets(temp_dir)) - before
        if new:
            return new.pop()
        time.sleep(0.2)
    raise RuntimeError("raylet did not appear")


def start_cluster(temp_dir: Path, head_cpus: int = 1, head_gpus: int = 0) -> RayCluster:
    """A head node (GCS + dashboard with the Jobs API) named `node_a`. Ray gives a node 30 s
    to register with the GCS; on a machine loaded by other work that can run out, so a
    failed start is cleaned up and tried again, on other ports."""
    for attempt in range(3):
        try:
            return _start_head(temp_dir, head_cpus, head_gpus)
        except (RuntimeError, subprocess.TimeoutExpired):
            if attempt == 2:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _start_head(temp_dir: Path, head_cpus: int, head_gpus: int) -> RayCluster:
    temp_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"})
    base = _port_block(220)
    gcs, dash = base, base + 1
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs}",
        f"--num-cpus={head_cpus}",
        f"--num-gpus={head_gpus}",
        '--resources={"node_a": 1}',
        f"--temp-dir={temp_dir}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={base + 2}",
        f"--dashboard-agent-grpc-port={base + 3}",
        f"--runtime-env-agent-port={base + 4}",
        f"--metrics-export-port={base + 5}",
        f"--node-manager-port={base + 6}",
        f"--object-manager-port={base + 7}",
        f"--ray-client-server-port={base + 8}",
        f"--min-worker-port={base + 20}",
        f"--max-worker-port={base + 219}",
        "--disable-usage-stats",
        "--object-store-memory=200000000",
        "--memory=4000000000",
    ]
    cluster = RayCluster(temp_dir, f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dash}", env=env)
    try:
        _run(cmd, env, 180)
        pid = _wait_new_raylet(temp_dir, set())
    except BaseException:
        cluster.stop()  # a head that timed out under load leaves its processes behind
        raise
    cluster = RayCluster(
        temp_dir=temp_dir,
        gcs_address=f"127.0.0.1:{gcs}",
        dashboard_url=f"http://127.0.0.1:{dash}",
        nodes=[Node("node_a", pid)],
        env=env,
    )
    return cluster
