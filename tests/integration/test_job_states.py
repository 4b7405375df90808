"""The state rules of §3.3–§3.6, with the engine side driven through the service layer."""

from __future__ import annotations

import concurrent.futures
import json
import time
from pathlib import Path

import dashscope
import httpx
import pytest
from dashscope import FineTunes

from dashtune.services import engine
from dashtune.services.runtime import Runtime
from tests.conftest import Server
from tests.integration.helpers import (
    assert_error,
    create_job,
    sft_rows,
    upload,
    wait_status,
    write_jsonl,
)


@pytest.fixture
def rt(server: Server) -> Runtime:
    runtime = server.runtime()
    yield runtime  # type: ignore[misc]
    runtime.close()


@pytest.fixture
def tenant(
    server: Server, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[httpx.Client, str]:
    key = server.new_key(f"user-{request.node.name[:40]}")
    client = server.http(key)
    fid = upload(client, write_jsonl(tmp_path / "t.jsonl", sft_rows(3)))
    yield client, fid  # type: ignore[misc]
    client.close()


def claim(rt: Runtime, job_id: str) -> None:
    """Let the engine claim the oldest queued job, which must be this one, as a scheduler
    of the local executor does (before launching it)."""
    job = engine.claim_next(rt, "test-host", executor="local")
    assert job is not None and job.id == job_id, job


def to_running(c: httpx.Client, rt: Runtime, job_id: str) -> None:
    wait_status(c, job_id, "QUEUING")
    claim(rt, job_id)
    job = c.get(f"/fine-tunes/{job_id}").json()["output"]
    assert job["status"] == "RUNNING"
    # Placed from the claim on, not yet on a node: the launch adds those.
    assert job["placement"] == {"executor": "local", "nodes": [], "devices": [], "num_workers": 1}


def test_job_without_engine_waits_in_queuing(
    server: Server, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    job = create_job(c, fid)
    assert job["status"] == "PENDING"
    queued = wait_status(c, job["job_id"], "QUEUING")
    time.sleep(1.5)  # several scheduler ticks: nothing runs it
    assert c.get(f"/fine-tunes/{job['job_id']}").json()["output"]["status"] == "QUEUING"
    assert queued["allowed_actions"] == ["cancel", "pause"]


def test_invalid_dataset_fails_job_naming_file_and_line(
    server: Server, tenant: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    c, _ = tenant
    rows = sft_rows(3)
    rows[1] = {"messages": [{"role": "user", "content": "no answer"}]}
    fid = upload(c, write_jsonl(tmp_path / "dpo-bad.jsonl", rows))
    job = create_job(c, fid)
    failed = wait_status(c, job["job_id"], "FAILED")
    assert failed["code"] == "InvalidDataset"
    assert "dpo-bad.jsonl" in failed["message"] and "line 2" in failed["message"]
    assert "assistant" in failed["message"]
    assert failed["end_time"]
    # A dpo job on sft data fails the same way, on line 1.
    job = create_job(
        c, upload(c, write_jsonl(tmp_path / "s.jsonl", sft_rows(2))), training_type="dpo_full"
    )
    failed = wait_status(c, job["job_id"], "FAILED")
    assert "line 1" in failed["message"] and "chosen" in failed["message"]


def test_cancel_in_each_state(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    # PENDING is short-lived under a live scheduler: cancel right after create may see
    # PENDING or QUEUING; both end CANCELED at once.
    j = create_job(c, fid)
    assert c.post(f"/fine-tunes/{j['job_id']}/cancel").json()["output"] == {"status": "success"}
    assert c.get(f"/fine-tunes/{j['job_id']}").json()["output"]["status"] == "CANCELED"

    # RUNNING -> CANCELING (idempotent) -> CANCELED once the worker stops.
    j = create_job(c, fid)
    to_running(c, rt, j["job_id"])
    assert c.post(f"/fine-tunes/{j['job_id']}/cancel").status_code == 200
    canceling = c.get(f"/fine-tunes/{j['job_id']}").json()["output"]
    assert canceling["status"] == "CANCELING"
    assert canceling["modifier"] == canceling["creator"]
    assert c.post(f"/fine-tunes/{j['job_id']}/cancel").status_code == 200
    assert engine.heartbeat(rt, j["job_id"]) == "CANCELING"
    engine.finish(rt, j["job_id"], engine.Outcome(usage=12, canceled=True))
    done = c.get(f"/fine-tunes/{j['job_id']}").json()["output"]
    assert done["status"] == "CANCELED" and done["usage"] == 12 and done["end_time"]

    # Terminal states refuse.
    r = c.post(f"/fine-tunes/{j['job_id']}/cancel")
    assert_error(r, 400, "UnsupportedOperation", "cannot be canceled")
    s = create_job(c, fid)
    to_running(c, rt, s["job_id"])
    engine.finish(rt, s["job_id"], engine.Outcome(usage=5, final_path="/tmp/none"))
    assert_error(
        c.post(f"/fine-tunes/{s['job_id']}/cancel"), 400, "UnsupportedOperation", "succeeded"
    )
    f = create_job(c, fid)
    to_running(c, rt, f["job_id"])
    engine.finish(rt, f["job_id"], engine.Outcome(code="TrainingFailed", message="boom"))
    failed = c.get(f"/fine-tunes/{f['job_id']}").json()["output"]
    assert failed["status"] == "FAILED" and failed["code"] == "TrainingFailed"
    assert_error(c.post(f"/fine-tunes/{f['job_id']}/cancel"), 400, "UnsupportedOperation")


def test_delete_in_each_state(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    queued = create_job(c, fid)
    wait_status(c, queued["job_id"], "QUEUING")
    assert_error(
        c.delete(f"/fine-tunes/{queued['job_id']}"), 400, "UnsupportedOperation", "cancel it first"
    )
    running = create_job(c, fid)
    c.post(f"/fine-tunes/{queued['job_id']}/cancel")
    to_running(c, rt, running["job_id"])
    assert_error(c.delete(f"/fine-tunes/{running['job_id']}"), 400, "UnsupportedOperation")
    assert_error(c.delete(f"/files/{fid}"), 400, "UnsupportedOperation", running["job_id"])
    c.post(f"/fine-tunes/{running['job_id']}/cancel")
    assert_error(
        c.delete(f"/fine-tunes/{running['job_id']}"), 400, "UnsupportedOperation", "CANCELING"
    )
    engine.finish(rt, running["job_id"], engine.Outcome(canceled=True))
    artifacts = server.data_dir / "jobs" / running["job_id"]
    artifacts.mkdir(parents=True)
    (artifacts / "model.safetensors").write_bytes(b"x")
    for jid in (queued["job_id"], running["job_id"]):
        assert c.delete(f"/fine-tunes/{jid}").json()["output"] == {"status": "success"}
        assert_error(c.get(f"/fine-tunes/{jid}"), 404, "NotFound")
        assert_error(c.get(f"/fine-tunes/{jid}/logs"), 404, "NotFound")
        assert_error(c.delete(f"/fine-tunes/{jid}"), 404, "NotFound")
    assert not artifacts.exists()
    assert c.get("/fine-tunes").json()["output"]["total"] == 0
    # The training file is free again once no live job uses it.
    assert c.delete(f"/files/{fid}").status_code == 200


def test_succeeded_job_has_output_checkpoints_and_export(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str], tmp_path: Path
) -> None:
    c, fid = tenant
    j = create_job(c, fid)
    to_running(c, rt, j["job_id"])
    ckpt_dir = tmp_path / "checkpoint-2"
    ckpt_dir.mkdir()
    (ckpt_dir / "adapter.safetensors").write_bytes(b"w")
    engine.add_checkpoint(rt, j["job_id"], "checkpoint-2", 2, str(ckpt_dir), {"loss": 1.0})
    engine.record_metrics(rt, j["job_id"], 4, {"loss": 0.5})
    engine.finish(rt, j["job_id"], engine.Outcome(usage=99, final_path=str(tmp_path)))
    done = c.get(f"/fine-tunes/{j['job_id']}").json()["output"]
    assert done["status"] == "SUCCEEDED" and done["usage"] == 99
    assert done["finetuned_output"] == f"dashtune-tiny-{j['job_id']}"
    cps = c.get(f"/fine-tunes/{j['job_id']}/checkpoints").json()["output"]
    assert isinstance(cps, list) and [cp["checkpoint"] for cp in cps] == [
        "checkpoint-2",
        "checkpoint-4",
    ]
    assert cps[0]["full_name"] == f"{j['job_id']}-checkpoint-2" and cps[0]["status"] == "PENDING"
    assert cps[1]["model_name"] == done["finetuned_output"] and cps[1]["status"] == "SUCCEEDED"
    assert_error(
        c.get(f"/fine-tunes/{j['job_id']}/export/checkpoint-2"),
        400,
        "InvalidParameter",
        "model_name",
    )
    assert_error(
        c.get(f"/fine-tunes/{j['job_id']}/export/checkpoint-9", params={"model_name": "x"}),
        404,
        "NotFound",
    )
    assert_error(
        c.get(
            f"/fine-tunes/{j['job_id']}/export/checkpoint-2",
            params={"model_name": done["finetuned_output"]},
        ),
        409,
        "Conflict",
    )
    r = c.get(f"/fine-tunes/{j['job_id']}/export/checkpoint-2", params={"model_name": "my-ckpt"})
    assert r.status_code == 200 and r.json()["output"] is True
    deadline = time.monotonic() + 10
    while True:
        cp = c.get(f"/fine-tunes/{j['job_id']}/checkpoints").json()["output"][0]
        if cp["status"] == "SUCCEEDED":
            break
        assert time.monotonic() < deadline, cp
        time.sleep(0.1)
    assert cp["model_name"] == "my-ckpt"
    assert (
        server.data_dir / "models" / j["job_id"] / "checkpoint-2" / "adapter.safetensors"
    ).exists()
    # The exported model can be trained further (continue training from it).
    more = create_job(c, fid, model="my-ckpt")
    assert more["base_model"] == "dashtune-tiny" and more["model"] == "my-ckpt"


def test_sse_stream_through_the_sdk(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    c, fid = tenant
    key = c.headers["Authorization"].split()[1]
    j = create_job(c, fid)
    to_running(c, rt, j["job_id"])
    engine.log(rt, j["job_id"], ["step 1/2 loss=1.0"])
    engine.record_metrics(rt, j["job_id"], 1, {"loss": 1.0})
    engine.finish(rt, j["job_id"], engine.Outcome(usage=3, final_path="/tmp/x"))
    monkeypatch.setattr(dashscope, "base_http_api_url", server.api)
    events = list(FineTunes.stream_events(j["job_id"], api_key=key))
    payloads = [e.output for e in events]
    assert all(e.status_code == 200 for e in events)
    # Each payload is the frame's JSON text exactly: no leading space from `data: `.
    assert all(isinstance(p, str) and p == p.strip() and json.loads(p)["type"] for p in payloads)
    text = " ".join(str(p) for p in payloads)
    assert "step 1/2 loss=1.0" in text and "SUCCEEDED" in text
    r = httpx.get(
        f"{server.api}/fine-tunes/{j['job_id']}/stream", headers={"Authorization": f"Bearer {key}"}
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    assert "data:" in r.text
    assert_error(c.get("/fine-tunes/ft-000000000000-0000/stream"), 404, "NotFound")


def test_quota_holds_under_40_concurrent_creates(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    key = c.headers["Authorization"].split()[1]
    body = {"model": "dashtune-tiny", "training_file_ids": [fid]}

    def create(_: int) -> httpx.Response:
        with server.http(key) as own:
            return own.post("/fine-tunes", json=body)

    with concurrent.futures.ThreadPoolExecutor(max_workers=40) as pool:
        results = list(pool.map(create, range(40)))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 20 and codes.count(429) == 20, codes
    refused = next(r for r in results if r.status_code == 429)
    assert_error(refused, 429, "Throttling", "20", "delete")
    assert c.get("/fine-tunes", params={"page_size": 100}).json()["output"]["total"] == 20
    # A CANCELED job does not count.
    ids = [r.json()["output"]["job_id"] for r in results if r.status_code == 200]
    assert c.post(f"/fine-tunes/{ids[0]}/cancel").status_code == 200
    assert c.post("/fine-tunes", json=body).status_code == 200
    assert_error(c.post("/fine-tunes", json=body), 429, "Throttling")
    # A SUCCEEDED job counts until it is deleted; deleting it frees the slot.
    for jid in ids[1:]:
        wait_status(c, jid, "QUEUING")
    claimed = engine.claim_next(rt, "test-host")
    assert claimed is not None and claimed.id in ids
    engine.finish(rt, claimed.id, engine.Outcome(usage=1, final_path="/tmp/none"))
    assert c.get(f"/fine-tunes/{claimed.id}").json()["output"]["status"] == "SUCCEEDED"
    assert_error(c.post("/fine-tunes", json=body), 429, "Throttling")
    assert c.delete(f"/fine-tunes/{claimed.id}").status_code == 200
    assert c.post("/fine-tunes", json=body).status_code == 200
    assert_error(c.post("/fine-tunes", json=body), 429, "Throttling")
