"""An exception inside training ends the job FAILED with a message and the traceback in
its logs (the worker entry point run in-process, on a job claimed through the engine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dashtune.scheduler import worker
from dashtune.services import engine
from dashtune.store.db import Database
from tests.conftest import Server
from tests.integration.helpers import create_job, sft_rows, upload, write_jsonl
from tests.integration.test_job_states import wait_status


def test_exception_in_training_fails_the_job_with_traceback(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dashtune.trainer.run

    def explode(*_: object, **__: object) -> None:
        raise RuntimeError("boom in step 3")

    monkeypatch.setattr(dashtune.trainer.run, "train", explode)
    monkeypatch.setattr(worker, "build_spec", lambda rt, job: object())
    monkeypatch.setenv("DASHTUNE_DATA_DIR", str(server.data_dir))
    monkeypatch.setenv("DASHTUNE_DATABASE_URL", server.database_url)
    key = server.new_key("exploder")
    with server.http(key) as c:
        job = create_job(c, upload(c, write_jsonl(tmp_path / "e.jsonl", sft_rows(2))))
        wait_status(c, job["job_id"], "QUEUING")
        rt = server.runtime()
        try:
            claimed = engine.claim_next(rt, "test-host")
            assert claimed is not None and claimed.id == job["job_id"]
        finally:
            rt.close()
        assert worker.main(job["job_id"]) == 0
        done = c.get(f"/fine-tunes/{job['job_id']}").json()["output"]
        assert done["status"] == "FAILED" and done["code"] == "TrainingFailed"
        assert "RuntimeError: boom in step 3" in done["message"] and "logs" in done["message"]
        logs = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()["output"]
        text = "\n".join(logs["logs"])
        assert "Traceback (most recent call last)" in text and "boom in step 3" in text


def test_worker_exit_codes_say_what_happened(server: Server, tmp_path: Path) -> None:
    """A worker that could not record its outcome says why by its exit code: the job's
    message names a full disk or the database, not "killed or out of memory"."""
    from dashtune.domain import worker_exits

    key = server.new_key("exit-codes")
    rt = server.runtime()
    try:
        with server.http(key) as c:
            fid = upload(c, write_jsonl(tmp_path / "e.jsonl", sft_rows(2)))
            for returncode, code, words in (
                (worker_exits.DISK_FULL, "DiskFull", "disk full"),
                (worker_exits.STORE_UNREACHABLE, "", "could not reach the database"),
            ):
                job = create_job(c, fid)
                wait_status(c, job["job_id"], "QUEUING")
                claimed = engine.claim_next(rt, "test-host")
                assert claimed is not None and claimed.id == job["job_id"]
                engine.worker_exited(rt, job["job_id"], returncode)
                done = c.get(f"/fine-tunes/{job['job_id']}").json()["output"]
                logs = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000})
                told = "\n".join(logs.json()["output"]["logs"])
                if code == "DiskFull":  # retrying would fill the disk again
                    assert done["status"] == "FAILED" and done["code"] == code, done
                else:  # nothing was recorded: the job is queued again to resume (issue 9)
                    assert done["status"] in ("QUEUING", "FAILED"), done
                assert words in told and "out of memory" not in told
    finally:
        rt.close()


def test_worker_that_cannot_reach_the_database_exits_saying_so() -> None:
    from dashtune.config import Settings
    from dashtune.domain import worker_exits
    from dashtune.services.runtime import Runtime

    down = Settings(database_url="postgresql://nobody@127.0.0.1:1/none")
    rt = Runtime(down, Database(down.database), None, None)  # type: ignore[arg-type]
    try:
        code = worker.record(rt, "ft-000000000000-0000", engine.Outcome(canceled=True), 0)
    finally:
        rt.close()
    assert code == worker_exits.STORE_UNREACHABLE
