"""A job whose worker died while the server was down is failed on restart, not left RUNNING."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from dashtune.store.tables import Job
from tests.conftest import start_server, stop_server
from tests.e2e.conftest import rows_for, wait_for, wait_terminal, write_jsonl

pytestmark = pytest.mark.e2e


def test_restart_fails_jobs_whose_worker_is_gone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = {"DASHTUNE_EXECUTOR": "local", "DASHTUNE_HEARTBEAT_INTERVAL": "1"}
    srv = start_server(data, "", **env)
    try:
        with srv.http() as c:
            raw = write_jsonl(tmp_path / "r.jsonl", rows_for("sft", 256)).read_bytes()
            fid = c.post("/files", files={"files": ("r.jsonl", raw)}).json()["data"][
                "uploaded_files"
            ][0]["file_id"]
            job = c.post(
                "/fine-tunes",
                json={
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "hyper_parameters": {"n_epochs": 50, "max_length": 64},
                },
            ).json()["output"]
            wait_for(c, job["job_id"], lambda j: j["status"] == "RUNNING" and j["progress"] > 0)
        rt = srv.runtime()
        with rt.db.read() as s:
            pid = s.get(Job, job["job_id"]).worker_pid  # type: ignore[union-attr]
        rt.close()
        # The machine "restarts": server and worker die without a word.
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
    finally:
        stop_server(srv)
    t0 = time.monotonic()
    again = start_server(data, "", **env)
    try:
        with again.http(srv.key) as c:
            done = wait_terminal(c, job["job_id"], timeout=30)
        assert done["status"] == "FAILED" and done["code"] == "WorkerLost"
        assert "gone" in done["message"]
        assert time.monotonic() - t0 < 30
    finally:
        stop_server(again)


def test_api_process_never_imports_torch(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "d", "", DASHTUNE_EXECUTOR="local")
    try:
        with srv.http() as c:
            raw = write_jsonl(tmp_path / "t.jsonl", rows_for("sft", 16)).read_bytes()
            fid = c.post("/files", files={"files": ("t.jsonl", raw)}).json()["data"][
                "uploaded_files"
            ][0]["file_id"]
            job = c.post(
                "/fine-tunes",
                json={
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "hyper_parameters": {"max_length": 64},
                },
            ).json()["output"]
            assert wait_terminal(c, job["job_id"])["status"] == "SUCCEEDED"
        # torch loads libtorch_cpu.so into any process that imports it.
        maps = Path(f"/proc/{srv.proc.pid}/maps").read_text()
        assert "libtorch" not in maps
        assert psutil.Process(srv.proc.pid).memory_info().rss < 300 * 2**20
    finally:
        stop_server(srv)
