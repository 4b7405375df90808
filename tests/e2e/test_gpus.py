"""GPUs as resources on the local executor (DASHTUNE_GPUS fakes 4 on this CPU machine):
each job's workers get their own devices in CUDA_VISIBLE_DEVICES, never shared."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import start_server, stop_server
from tests.e2e.conftest import rows_for, upload_rows, wait_for, wait_terminal

pytestmark = pytest.mark.e2e


def test_two_gpu_jobs_run_two_at_a_time_on_disjoint_devices(tmp_path: Path) -> None:
    srv = start_server(
        tmp_path / "d",
        "",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_GPUS="0,1,2,3",
        DASHTUNE_MAX_CONCURRENT_JOBS="3",
        DASHTUNE_HEARTBEAT_INTERVAL="1",
        DASHTUNE_CANCEL_GRACE_SECONDS="5",
        DASHTUNE_SERVING="false",
    )
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp_path, "long.jsonl", rows_for("sft", 256))

            def create(**hp: object) -> dict[str, object]:
                body = {
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "hyper_parameters": hp,
                }
                return dict(c.post("/fine-tunes", json=body).json())

            body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
            refused = c.post(
                "/fine-tunes", json={**body, "hyper_parameters": {"gpus_per_worker": 5}}
            )
            assert refused.status_code == 400, refused.text
            too_big = refused.json()
            assert too_big["code"] == "InvalidParameter", too_big
            assert "4 GPU(s) (0,1,2,3)" in str(too_big["message"]), too_big
            # Not asked: one GPU a worker where the executor has GPUs.
            unasked = c.post("/fine-tunes", json=body).json()["output"]
            assert unasked["resolved_hyper_parameters"]["gpus_per_worker"] == 1, unasked
            c.post(f"/fine-tunes/{unasked['job_id']}/cancel")
            assert wait_terminal(c, unasked["job_id"], timeout=120)["status"] == "CANCELED"
            two_by_three = create(num_workers=3, gpus_per_worker=2)
            assert two_by_three["code"] == "InvalidParameter", two_by_three

            long = {"n_epochs": 50, "max_length": 64, "gpus_per_worker": 2}
            ids = [str(create(**long)["output"]["job_id"]) for _ in range(3)]  # type: ignore[index]
            first = [
                wait_for(c, j, lambda x: x["status"] == "RUNNING" and x["progress"] > 0, 300)
                for j in ids[:2]
            ]
            third = c.get(f"/fine-tunes/{ids[2]}").json()["output"]
            assert third["status"] == "QUEUING", third  # 4 GPUs, 2 jobs of 2: it waits
            devices = [tuple(j["placement"]["devices"]) for j in first]
            assert sorted(d for pair in devices for d in pair) == ["0", "1", "2", "3"], devices
            for job, pair in zip(first, devices, strict=True):
                got = given(c, str(job["job_id"]))
                assert got == ",".join(pair), (got, pair)

            c.post(f"/fine-tunes/{ids[0]}/cancel")
            assert wait_terminal(c, ids[0], timeout=60)["status"] == "CANCELED"
            started = wait_for(
                c, ids[2], lambda x: x["status"] == "RUNNING" and x["progress"] > 0, 300
            )
            assert tuple(started["placement"]["devices"]) == devices[0]  # the freed pair
            assert given(c, ids[2]) == ",".join(devices[0])
            for j in ids[1:]:
                c.post(f"/fine-tunes/{j}/cancel")
                assert wait_terminal(c, j, timeout=60)["status"] == "CANCELED"

            # A CPU job on a GPU host sees no GPU at all.
            cpu = str(create(max_length=64, gpus_per_worker=0)["output"]["job_id"])  # type: ignore[index]
            assert wait_terminal(c, cpu)["status"] == "SUCCEEDED"
            assert given(c, cpu) == ""
            default = c.get(f"/fine-tunes/{ids[1]}").json()["output"]
            assert default["resolved_hyper_parameters"]["num_workers"] == 1
    finally:
        stop_server(srv)


def given(c, job_id: str) -> str | None:  # type: ignore[no-untyped-def]
    """The CUDA_VISIBLE_DEVICES the worker logged it was started with."""
    lines = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
    for ln in lines:
        m = re.search(r"started on .*CUDA_VISIBLE_DEVICES=([0-9,]*)", ln)
        if m:
            return m.group(1)
    return None
