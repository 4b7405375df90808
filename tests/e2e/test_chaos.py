"""Chaos: SIGKILL the server at each named point of a delete, an upload or an export
(the DASHTUNE_CRASH_AT test hook), or under a running worker; restart it and check that
the data directory and the database agree, and that no worker runs unadopted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import (
    rows_for,
    start_long_job,
    upload_rows,
    wait_for,
    wait_gone,
    wait_terminal,
    worker_pid,
    write_jsonl,
)

pytestmark = pytest.mark.e2e

ENV = {
    "DASHTUNE_EXECUTOR": "local",
    "DASHTUNE_SERVING": "false",
    "DASHTUNE_HEARTBEAT_INTERVAL": "1",
    "DASHTUNE_CANCEL_GRACE_SECONDS": "3",
    "DASHTUNE_SWEEP_GRACE_SECONDS": "0",
}


def assert_consistent(srv: Server) -> None:
    """Every blob has a file row and every row its blob; every job or model directory
    belongs to a job row; nothing staged or in the trash."""
    from dashtune.store.tables import Job, StoredFile

    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            rows = set(s.scalars(select(StoredFile.blob)))
            jobs = set(s.scalars(select(Job.id)))
    finally:
        rt.close()
    data = srv.data_dir
    blobs = {p.name for p in (data / "files").glob("*/*") if p.is_file()}
    assert blobs == rows, f"blobs without rows {blobs - rows}, rows without blobs {rows - blobs}"
    for root in ("jobs", "models"):
        dirs = {p.name for p in (data / root).glob("*")} if (data / root).exists() else set()
        dirs.discard("builtin")  # models/builtin: the tiny model, built on first use
        assert dirs <= jobs, f"{root}/ dirs without a job: {dirs - jobs}"
    trash = data / "trash"
    assert not trash.exists() or not any(trash.iterdir()), list(trash.iterdir())


def crash(srv: Server, action: Callable[[], Any]) -> None:
    """Run `action` against a server started with DASHTUNE_CRASH_AT; it must die by SIGKILL."""
    with pytest.raises(httpx.HTTPError):
        action()
    assert srv.proc.wait(timeout=60) == -signal.SIGKILL, srv.log_text()


def restart(srv: Server, **env: str) -> Server:
    return start_server(srv.data_dir, srv.database_url, **{**ENV, **env})


def files_listed(c: httpx.Client) -> list[str]:
    out = c.get("/files", params={"page_size": 100}).json()["data"]["files"]
    return [f["file_id"] for f in out]


def test_crashed_uploads_and_file_deletes_converge(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = start_server(data, "", **ENV, DASHTUNE_CRASH_AT="upload-after-blob")
    key = srv.key
    raw = write_jsonl(tmp_path / "a.jsonl", rows_for("sft", 8)).read_bytes()
    two = [("files", ("a.jsonl", raw)), ("files", ("b.jsonl", raw))]
    try:
        # Blobs published, rows not inserted.
        with srv.http() as c:
            crash(srv, lambda: c.post("/files", files={"files": ("a.jsonl", raw)}))
        # A multi-file upload killed after its first part.
        srv = restart(srv, DASHTUNE_CRASH_AT="upload-mid-request")
        with srv.http(key) as c:
            assert files_listed(c) == []
            assert_consistent(srv)
            crash(srv, lambda: c.post("/files", files=two))
        # A file delete killed between its row and its blob.
        srv = restart(srv, DASHTUNE_CRASH_AT="file-delete-after-row")
        with srv.http(key) as c:
            assert files_listed(c) == []
            assert_consistent(srv)
            r = c.post("/files", files=two)
            assert r.status_code == 200, r.text
            first, second = (f["file_id"] for f in r.json()["data"]["uploaded_files"])
            crash(srv, lambda: c.delete(f"/files/{first}"))
        srv = restart(srv)
        with srv.http(key) as c:
            assert files_listed(c) == [second]
            assert c.get(f"/files/{first}").status_code == 404
            assert c.get(f"/files/{second}/content").content == raw
        assert_consistent(srv)
    finally:
        stop_server(srv)


def test_crashed_export_and_job_delete_converge(tmp_path: Path) -> None:
    """A job that "trained" in-process (the engine calls a worker makes, on a fake
    checkpoint): its export and its delete are killed half-way, and converge."""
    from dashtune.services import engine

    data = tmp_path / "data"
    env = {**ENV, "DASHTUNE_EXECUTOR": "none"}
    srv = start_server(data, "", **env)
    key = srv.key
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 8))
            body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            wait_for(c, job_id, lambda j: j["status"] == "QUEUING")
        rt = srv.runtime()
        try:
            assert engine.claim_next(rt, "test-host") is not None
            out = data / "jobs" / job_id
            for name in ("checkpoint-2", "final"):
                (out / name).mkdir(parents=True)
                (out / name / "model.safetensors").write_bytes(os.urandom(1 << 16))
            engine.add_checkpoint(rt, job_id, "checkpoint-2", 2, str(out / "checkpoint-2"), {})
            engine.record_metrics(rt, job_id, 4, {"loss": 1.0})
            engine.finish(rt, job_id, engine.Outcome(usage=10, final_path=str(out / "final")))
        finally:
            rt.close()
        stop_server(srv)
        # The scheduler copies the checkpoint into models/, then the hook kills the server.
        srv = restart(srv, **env, DASHTUNE_CRASH_AT="export-after-copy")
        with srv.http(key) as c:
            assert wait_terminal(c, job_id)["status"] == "SUCCEEDED"
            r = c.post(f"/fine-tunes/{job_id}/export/checkpoint-2", params={"model_name": "early"})
            assert r.status_code == 200, r.text
            assert srv.proc.wait(timeout=60) == -signal.SIGKILL, srv.log_text()
        assert (data / "models" / job_id / "checkpoint-2").is_dir()
        # On restart the export completes; then a delete is killed after its rows.
        srv = restart(srv, **env, DASHTUNE_CRASH_AT="job-delete-after-rows")
        with srv.http(key) as c:
            deadline = time.monotonic() + 30
            while c.get(f"/fine-tunes/{job_id}/checkpoints").json()["output"][0]["status"] != (
                "SUCCEEDED"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert_consistent(srv)
            crash(srv, lambda: c.delete(f"/fine-tunes/{job_id}"))
        assert (data / "jobs" / job_id).is_dir()  # the crash left the artifacts behind
        srv = restart(srv, **env)
        with srv.http(key) as c:
            assert c.get(f"/fine-tunes/{job_id}").status_code == 404
        assert not (data / "jobs" / job_id).exists() and not (data / "models" / job_id).exists()
        assert_consistent(srv)
    finally:
        stop_server(srv)


def live_workers(*job_ids: str) -> list[psutil.Process]:
    """Worker processes of these jobs (other tests' and other servers' are not counted)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "dashtune.scheduler.worker" in cmd and cmd[-1] in job_ids:
            out.append(p)
    return out


def test_restarted_server_adopts_the_running_worker(tmp_path: Path) -> None:
    """SIGKILL the server under a training worker: the new one adopts it, keeps the
    concurrency limit (1) with it, and enforces a cancel on it."""
    data = tmp_path / "data"
    srv = start_server(data, "", **ENV, DASHTUNE_MAX_CONCURRENT_JOBS="1")
    key = srv.key
    pid = None
    try:
        with srv.http() as c:
            first = start_long_job(c, tmp_path)
            fid = upload_rows(c, tmp_path, "q.jsonl", rows_for("sft", 16))
            body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
            queued = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            wait_for(c, queued, lambda j: j["status"] == "QUEUING")
        pid = worker_pid(srv, first)
        assert pid is not None
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait()
        assert psutil.Process(pid).is_running()  # the worker trains on without a server
        srv = restart(srv, DASHTUNE_MAX_CONCURRENT_JOBS="1")
        with srv.http(key) as c:
            wait_for(c, first, lambda j: j["status"] == "RUNNING")
            logs = c.get(f"/fine-tunes/{first}/logs", params={"line": 1000}).json()["output"]
            deadline = time.monotonic() + 30
            while not any("adopted" in line for line in logs["logs"]):
                assert time.monotonic() < deadline, logs
                time.sleep(0.2)
                logs = c.get(f"/fine-tunes/{first}/logs", params={"line": 1000}).json()["output"]
            # Several scheduler ticks later the queued job still waits: the limit holds.
            time.sleep(3)
            assert c.get(f"/fine-tunes/{queued}").json()["output"]["status"] == "QUEUING"
            assert [p.pid for p in live_workers(first, queued)] == [pid]
            c.post(f"/fine-tunes/{first}/cancel")
            assert wait_terminal(c, first, timeout=60)["status"] == "CANCELED"
            wait_gone(pid, timeout=30)
            wait_for(c, queued, lambda j: j["status"] in ("RUNNING", "SUCCEEDED"), timeout=60)
            c.post(f"/fine-tunes/{queued}/cancel")
            wait_terminal(c, queued, timeout=60)
    finally:
        stop_server(srv)
        if pid is not None and psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_reused_worker_pid_is_not_adopted(tmp_path: Path) -> None:
    """A job's recorded pid now belongs to another program: the job ends, the program lives."""
    from dashtune.services import engine

    data = tmp_path / "data"
    srv = start_server(data, "", DASHTUNE_EXECUTOR="none", DASHTUNE_SERVING="false")
    key = srv.key
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "q.jsonl", rows_for("sft", 8))
            body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            wait_for(c, job_id, lambda j: j["status"] == "QUEUING")
        rt = srv.runtime()
        try:
            claimed = engine.claim_next(rt, socket.gethostname())
            assert claimed is not None and claimed.id == job_id
            engine.set_worker(rt, job_id, stranger.pid)
        finally:
            rt.close()
        stop_server(srv)
        srv = restart(srv, DASHTUNE_MAX_ATTEMPTS="1")  # no retry: the job must end
        with srv.http(key) as c:
            done = wait_terminal(c, job_id, timeout=30)
        assert done["status"] == "FAILED" and done["code"] == "WorkerLost", done
        assert stranger.poll() is None, "the server signalled a process that is not its worker"
        assert not live_workers(job_id)
    finally:
        stop_server(srv)
        stranger.kill()
        stranger.wait()
