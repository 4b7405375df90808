"""A job whose worker died while the server was down is retried (here: failed, with
DASHTUNE_MAX_ATTEMPTS=1) on restart, not left RUNNING. tests/e2e/test_resume.py has the
retry that resumes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from tests.conftest import start_server, stop_server
from tests.e2e.conftest import (
    rows_for,
    start_long_job,
    upload_rows,
    wait_gone,
    wait_terminal,
    worker_pid,
)

pytestmark = pytest.mark.e2e


def test_restart_fails_jobs_whose_worker_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {
        "DASHTUNE_EXECUTOR": "local",
        "DASHTUNE_HEARTBEAT_INTERVAL": "1",
        "DASHTUNE_MAX_ATTEMPTS": "1",
    }
    srv = start_server(data, "", **env)
    try:
        with srv.http() as c:
            job_id = start_long_job(c, tmp_path)
        pid = worker_pid(srv, job_id)
        assert pid is not None
        # The machine "restarts": server and worker die without a word.
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        os.kill(pid, signal.SIGKILL)
        wait_gone(pid)
    finally:
        stop_server(srv)
    t0 = time.monotonic()
    again = start_server(data, "", **env)
    try:
        with again.http(srv.key) as c:
            done = wait_terminal(c, job_id, timeout=30)
        assert done["status"] == "FAILED" and done["code"] == "WorkerLost"
        assert "gone" in done["message"]
        assert time.monotonic() - t0 < 30
    finally:
        stop_server(again)


def test_api_process_never_imports_torch(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d", "", DASHTUNE_EXECUTOR="local")
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 16))
            body = {
                "model": "dashtune-tiny",
                "training_file_ids": [fid],
                "hyper_parameters": {"max_length": 64},
            }
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            assert wait_terminal(c, job_id)["status"] == "SUCCEEDED"
        # torch loads libtorch_cpu.so into any process that imports it.
        maps = Path(f"/proc/{srv.proc.pid}/maps").read_text()
        assert "libtorch" not in maps
        assert "_raylet" not in maps  # Ray is imported only with DASHTUNE_EXECUTOR=ray
        assert psutil.Process(srv.proc.pid).memory_info().rss < 300 * 2**20
    finally:
        stop_server(srv)
