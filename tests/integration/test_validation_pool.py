"""Validation of PENDING jobs runs beside the scheduling loop: one tenant's large files
never keep another tenant's small job PENDING, and a validation is bounded in time."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashtune.config import Settings
from dashtune.services import engine, files, jobs
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal, ensure_user
from tests.conftest import Server, start_server, stop_server
from tests.integration.helpers import create_job, sft_rows, upload, write_jsonl


@pytest.fixture
def roomy_server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(
        tmp_path / "data",
        "",
        DASHTUNE_EXECUTOR="none",
        DASHTUNE_SERVING="false",
        DASHTUNE_VALIDATION_WORKERS="2",
    )
    yield srv
    stop_server(srv)


def test_a_big_jobs_validation_does_not_delay_a_small_one(
    roomy_server: Server, tmp_path: Path
) -> None:
    big_file = write_jsonl(tmp_path / "big.jsonl", sft_rows(40_000))  # ~6 MB: seconds to check
    small_file = write_jsonl(tmp_path / "small.jsonl", sft_rows(4))
    with roomy_server.http(roomy_server.new_key("big-tenant")) as a:
        # 12 x 6 MB: seconds of validation, so it is still running when the small job is
        # queued (a create wakes the pool at once; 4 files took 1.6 s, the small job 1.3 s,
        # both slowed by sharing the API process's GIL).
        big_ids = [upload(a, big_file) for _ in range(12)]
        with roomy_server.http(roomy_server.new_key("small-tenant")) as b:
            small_id = upload(b, small_file)
            big = create_job(a, big_ids[0], training_file_ids=big_ids)["job_id"]
            small = create_job(b, small_id)["job_id"]
            deadline = time.monotonic() + 60
            while (status := b.get(f"/fine-tunes/{small}").json()["output"]["status"]) == (
                "PENDING"
            ):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert status == "QUEUING"
            # The small job was queued while the big one was still being validated.
            assert a.get(f"/fine-tunes/{big}").json()["output"]["status"] == "PENDING"
        deadline = time.monotonic() + 120
        while (status := a.get(f"/fine-tunes/{big}").json()["output"]["status"]) == "PENDING":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert status == "QUEUING"


def test_a_validation_past_its_time_limit_fails_the_job(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", validation_timeout_seconds=0)
    rt = Runtime.open(settings)
    try:
        user_id, workspace = ensure_user(rt, "slow")
        who = Principal(user_id, "slow", workspace.id)
        raw = "".join(json.dumps(r) + "\n" for r in sft_rows(4)).encode()
        f = files.upload(rt, who, "t.jsonl", io.BytesIO(raw))
        job = jobs.create(rt, who, jobs.CreateJob(model="dashtune-tiny", training_file_ids=[f.id]))
        engine.validate(rt, job)
        done = jobs.get(rt, who, job.id)
        assert done.status == "FAILED" and done.code == "InvalidDataset"
        assert "DASHTUNE_VALIDATION_TIMEOUT_SECONDS" in (done.message or "")
    finally:
        rt.close()
