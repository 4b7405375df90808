"""Bounded resources: a worker past its memory limit, a full disk under uploads and under
training. The full disk is a small tmpfs mounted over part of the data directory (root
only; skipped otherwise), unmounted at the end."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import start_server, stop_server
from tests.e2e.conftest import alive, rows_for, upload_rows, wait_terminal, write_jsonl

pytestmark = pytest.mark.e2e

ENV = {"DASHTUNE_EXECUTOR": "local", "DASHTUNE_SERVING": "false"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs at tmp_path/data/<dir>: the test names the dir by creating it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount  # type: ignore[misc]
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_worker_over_its_memory_limit_fails_the_job_saying_so(tmp_path: Path) -> None:
    # Importing torch alone takes a worker past 150 MiB.
    srv = start_server(tmp_path / "data", "", **ENV, DASHTUNE_WORKER_MEMORY_LIMIT="150MiB")
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 16))
            body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            done = wait_terminal(c, job_id, timeout=120)
        assert done["status"] == "FAILED" and done["code"] == "MemoryLimitExceeded", done
        assert "150 MiB" in done["message"] and "DASHTUNE_WORKER_MEMORY_LIMIT" in done["message"]
    finally:
        stop_server(srv)


def test_upload_to_a_full_disk_is_507_and_stores_nothing(tmp_path: Path, small_disk) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    small_disk(data / "files")
    srv = start_server(data, "", **ENV)
    try:
        big = write_jsonl(tmp_path / "big.jsonl", rows_for("sft", 4000)).read_bytes()
        assert len(big) > 256 * 1024
        with srv.http() as c:
            r = c.post("/files", files={"files": ("big.jsonl", big)})
            assert r.status_code == 507, r.text
            assert (
                r.json()["code"] == "InsufficientStorage" and "disk is full" in r.json()["message"]
            )
            assert c.get("/files").json()["data"]["total"] == 0
            assert not list((data / "files").glob("*/*"))
            # Space is still there for a file that fits.
            upload_rows(c, tmp_path, "small.jsonl", rows_for("sft", 8))
    finally:
        stop_server(srv)


def test_training_on_a_full_disk_fails_the_job_with_disk_full(tmp_path: Path, small_disk) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    small_disk(data / "jobs")
    srv = start_server(data, "", **ENV)
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 32))
            hp = {"n_epochs": 1, "batch_size": 8, "max_length": 64}
            hp |= {"save_strategy": "steps", "save_steps": 1}
            body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp}
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            done = wait_terminal(c, job_id, timeout=180)
        assert done["status"] == "FAILED" and done["code"] == "DiskFull", done
        assert "Disk full" in done["message"] and "WorkerLost" not in done["message"]
    finally:
        stop_server(srv)


def test_full_disk_then_a_server_crash_converges(tmp_path: Path, small_disk) -> None:  # type: ignore[no-untyped-def]
    """Chaos for the full disk (issue 13, item 12): an upload refused and a job failed for
    lack of space, then the server SIGKILLed; after a restart the data directory and the
    database agree, nothing half-written is left, no worker runs, and deletes still work."""
    import signal

    import psutil

    from tests.e2e.test_chaos import assert_consistent

    data = tmp_path / "data"
    small_disk(data / "files")
    small_disk(data / "jobs")
    srv = start_server(data, "", **ENV)
    key = srv.key
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 32))
            big = write_jsonl(tmp_path / "big.jsonl", rows_for("sft", 4000)).read_bytes()
            assert c.post("/files", files={"files": ("big.jsonl", big)}).status_code == 507
            hp = {"n_epochs": 1, "batch_size": 8, "max_length": 64}
            hp |= {"save_strategy": "steps", "save_steps": 1}
            body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp}
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            done = wait_terminal(c, job_id, timeout=180)
            assert done["code"] == "DiskFull", done
        workers = [p.pid for p in psutil.Process(srv.proc.pid).children(recursive=True)]
        os.kill(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(timeout=30)
        srv = start_server(data, "", **ENV)
        with srv.http(key) as c:
            files = c.get("/files").json()["data"]["files"]
            assert [f["file_id"] for f in files] == [fid]
            again = c.get(f"/fine-tunes/{job_id}").json()["output"]
            assert again["status"] == "FAILED" and again["code"] == "DiskFull", again
            assert_consistent(srv)
            assert not [p for p in data.rglob("*") if p.name.endswith((".part", ".tmp"))]
            # No worker runs. The one whose job ended may still be a zombie: the killed
            # server never reaped it, and init reaps it when it gets round to it.
            assert not [pid for pid in workers if pid != srv.proc.pid and alive(pid)]
            assert c.delete(f"/fine-tunes/{job_id}").status_code == 200
            assert c.delete(f"/files/{fid}").status_code == 200
        assert not (data / "jobs" / job_id).exists()
        assert_consistent(srv)
    finally:
        stop_server(srv)


def test_a_worker_that_cannot_read_the_data_fails_the_job_saying_so(tmp_path: Path) -> None:
    """Shared artifacts (issue 8): a worker that cannot read a training file (on a cluster:
    a node that does not mount DASHTUNE_DATA_DIR) ends the job DataUnavailable naming the
    setting, before any training. Here the file vanishes from disk while the job waits."""
    from tests.e2e.conftest import start_long_job, wait_for

    srv = start_server(tmp_path / "data", "", **ENV, DASHTUNE_MAX_CONCURRENT_JOBS="1")
    try:
        with srv.http() as c:
            blocker = start_long_job(c, tmp_path)  # holds the only slot
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 16))
            body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
            job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
            wait_for(c, job_id, lambda j: j["status"] == "QUEUING")  # validated, waiting
            (srv.data_dir / "files" / fid[:2] / fid).unlink()
            c.post(f"/fine-tunes/{blocker}/cancel")
            done = wait_terminal(c, job_id, timeout=180)
        assert done["status"] == "FAILED" and done["code"] == "DataUnavailable", done
        assert f"cannot read training file {fid}" in done["message"], done
        assert "DASHTUNE_DATA_DIR" in done["message"] and "every node mounts" in done["message"]
        assert str(srv.data_dir.resolve()) not in done["message"]  # no server paths shown
    finally:
        stop_server(srv)
