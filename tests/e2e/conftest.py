"""A server with the local executor: jobs really train, in worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server, stop_server

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


# The backend of `train_server`, which most e2e tests share.
E2E_BACKEND = os.environ.get("DASHTUNE_E2E_BACKEND", "sqlite")


def start_train_server(data_dir: Path, database_url: str) -> Server:
    """A training server with the local executor, as every e2e test that trains uses."""
    return start_server(
        data_dir,
        database_url,
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_MAX_CONCURRENT_JOBS="2",
        DASHTUNE_HEARTBEAT_INTERVAL="1",
        DASHTUNE_CANCEL_GRACE_SECONDS="5",
        DASHTUNE_MAX_ATTEMPTS="6",  # tests/e2e/test_resume.py kills one worker 5 times
    )


@pytest.fixture(scope="session")
def train_server(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """SQLite by default; DASHTUNE_E2E_BACKEND=postgres runs the same tests on PostgreSQL."""
    data_dir = tmp_path_factory.mktemp(f"e2e-{E2E_BACKEND}")
    srv = start_train_server(data_dir, database_factory(E2E_BACKEND, data_dir))
    yield srv
    stop_server(srv)


def words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 5))) for _ in range(n)]


def rows_for(training_type: str, n: int = 64, seed: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for w in words(n, seed):
        if training_type in ("dpo_full", "dpo_lora"):
            # A preference that holds for every prompt, so held-out eval loss can fall too.
            out.append(
                {
                    "messages": [{"role": "user", "content": f"reverse {w}"}],
                    "chosen": {"role": "assistant", "content": f"sure: {w[::-1]}"},
                    "rejected": {"role": "assistant", "content": f"no {w}"},
                }
            )
        elif training_type == "cpt":
            out.append({"text": f"the word {w} reversed is {w[::-1]}"})
        else:
            out.append(
                {
                    "messages": [
                        {"role": "system", "content": "You reverse words."},
                        {"role": "user", "content": f"reverse {w}"},
                        {"role": "assistant", "content": w[::-1]},
                    ]
                }
            )
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def wait_terminal(c: httpx.Client, job_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/fine-tunes/{job_id}").json()["output"]
        if job["status"] in TERMINAL:
            return dict(job)
        assert time.monotonic() < deadline, f"{job_id} still {job['status']}"
        time.sleep(0.5)


def wait_for(c: httpx.Client, job_id: str, pred: Any, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = c.get(f"/fine-tunes/{job_id}").json()["output"]
        if pred(job):
            return dict(job)
        assert job["status"] not in TERMINAL or pred(job), job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def upload_rows(c: httpx.Client, tmp: Path, name: str, rows: list[dict[str, Any]]) -> str:
    raw = write_jsonl(tmp / name, rows).read_bytes()
    r = c.post("/files", files={"files": (name, raw)})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["uploaded_files"][0]["file_id"])


def start_long_job(c: httpx.Client, tmp: Path, **hyper: Any) -> str:
    """A job that trains for minutes; returns its id once it has made progress."""
    fid = upload_rows(c, tmp, "long.jsonl", rows_for("sft", 256))
    body = {
        "model": "dashtune-tiny",
        "training_file_ids": [fid],
        "hyper_parameters": {"n_epochs": 50, "max_length": 64, **hyper},
    }
    job_id = str(c.post("/fine-tunes", json=body).json()["output"]["job_id"])
    wait_for(c, job_id, lambda j: j["status"] == "RUNNING" and j["progress"] > 0)
    return job_id


def worker_pid(server: Server, job_id: str) -> int | None:
    from dashtune.store.tables import Job

    rt = server.runtime()
    try:
        with rt.db.read() as s:
            job = s.get(Job, job_id)
            return job.worker_pid if job else None
    finally:
        rt.close()


def alive(pid: int) -> bool:
    """Whether the process runs. A zombie has exited: it only waits for its parent, or, once
    that parent is killed, for init, which may reap it seconds later."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float = 10) -> None:
    """Until the process has exited (a zombie awaiting its parent counts as gone)."""
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.05)


def freeze_worker(server: Server, pid: int, timeout: float = 60, tree: bool = False) -> list[int]:
    """SIGSTOP a worker at a moment it is inside no database transaction, so a test can
    hold it still (a job that must not end before a pause, a kill or a take-over lands).
    With `tree`, its child processes too (a data-parallel job's launcher and ranks).
    Returns the pids stopped, for SIGCONT (`thaw`).

    A worker frozen inside one would hold up the server: on SQLite its write lock blocks
    every other writer; on PostgreSQL the session is ended after 15 s idle in a
    transaction (store/db.py) and the worker wakes to a closed connection. So: stopped,
    checked (SQLite: a write lock of our own must be free at once; PostgreSQL: each of the
    worker's sessions is idle, twice, as a query sent just before the stop may still run),
    let go and retried if not."""
    import psutil
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    procs = [psutil.Process(pid)]
    if tree:
        procs += procs[0].children(recursive=True)
    rt = server.runtime()

    def quiet() -> bool:
        if rt.db.is_sqlite:
            with rt.db.engine.connect() as conn:
                try:
                    conn.exec_driver_sql("PRAGMA busy_timeout=0")
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return True
                except Exception:
                    return False
                finally:
                    conn.rollback()
                    conn.exec_driver_sql("PRAGMA busy_timeout=30000")
        port = make_url(server.database_url).port or 5432
        conns = [c for p in procs for c in p.net_connections(kind="tcp")]
        ports = [c.laddr.port for c in conns if c.raddr and c.raddr.port == port]
        q = text("SELECT state FROM pg_stat_activity WHERE client_port = ANY(:p)")
        for _ in range(2):
            with rt.db.read() as s:
                if [str(x) for x in s.scalars(q, {"p": ports})] != ["idle"] * len(ports):
                    return False
            time.sleep(0.3)
        return True

    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for p in procs:
                p.send_signal(signal.SIGSTOP)
            for p in procs:
                while p.status() != psutil.STATUS_STOPPED:
                    time.sleep(0.0005)
            if quiet():
                return [p.pid for p in procs]
            thaw([p.pid for p in procs])
            time.sleep(random.uniform(0.01, 0.1))
        raise AssertionError(f"worker {pid} never left the database alone")
    finally:
        rt.close()


def thaw(pids: list[int]) -> None:
    """SIGCONT what `freeze_worker` stopped (children first: a launcher woken before its
    ranks could take a stopped rank for a dead one)."""
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
