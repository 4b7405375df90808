"""Fine-tune jobs API (§3) through the 1.x SDK, the 2.x client and raw HTTP."""

from __future__ import annotations

import re
import time
from pathlib import Path

import dashscope
import pytest
from dashscope import FineTunes

from dashtune.config import Settings
from tests.conftest import Server
from tests.integration.helpers import (
    TIME,
    assert_error,
    create_job,
    sft_rows,
    upload,
    wait_status,
    write_jsonl,
)

JOB_ID = re.compile(r"^ft-\d{12}-[0-9a-f]{4}$")


@pytest.fixture
def sdk(server: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setattr(dashscope, "base_http_api_url", server.api)
    return server


@pytest.fixture
def file_id(server: Server, tmp_path: Path) -> str:
    with server.http() as c:
        return upload(c, write_jsonl(tmp_path / "train.jsonl", sft_rows(4)))


def test_sdk_v1_create_get_list_cancel_delete_logs(sdk: Server, file_id: str) -> None:
    rsp = FineTunes.call(
        model="dashtune-tiny",
        training_file_ids=file_id,
        hyper_parameters={"n_epochs": 2, "learning_rate": "1.6e-5"},
        api_key=sdk.key,
    )
    assert rsp.status_code == 200, rsp
    job = rsp.output
    assert JOB_ID.match(job["job_id"])
    assert job["status"] == "PENDING"
    assert job["job_name"] == job["job_id"]
    assert job["training_file_ids"] == [file_id]
    assert job["validation_file_ids"] == []
    assert job["hyper_parameters"] == {"n_epochs": 2, "learning_rate": "1.6e-5"}
    assert job["resolved_hyper_parameters"]["learning_rate"] == 1.6e-5
    assert job["resolved_hyper_parameters"]["batch_size"] == 8
    assert job["training_type"] == "sft"
    assert TIME.match(job["create_time"])
    assert job["group"] == "llm" and job["usage"] == 0
    for key in ("model", "base_model", "workspace_id", "user_identity", "creator", "modifier"):
        assert job[key], key
    assert job["finetuned_output"] == f"dashtune-tiny-{job['job_id']}"
    assert job.end_time is None
    assert job["job_id"] in repr(rsp)  # the SDK's own objects render
    job_id = job["job_id"]

    got = FineTunes.get(job_id, api_key=sdk.key)
    assert got.status_code == 200 and got.output["job_id"] == job_id
    listed = FineTunes.list(page_no=1, page_size=100, api_key=sdk.key)
    assert job_id in [j["job_id"] for j in listed.output["jobs"]]
    logs = FineTunes.logs(job_id, api_key=sdk.key)  # the SDK's own offset=1, line=1000
    assert logs.status_code == 200 and isinstance(logs.output["logs"], list)

    canceled = FineTunes.cancel(job_id, api_key=sdk.key)
    assert canceled.status_code == 200 and canceled.output.status == "success"
    after = FineTunes.get(job_id, api_key=sdk.key).output
    assert after["status"] == "CANCELED" and TIME.match(after["end_time"])
    deleted = FineTunes.delete(job_id, api_key=sdk.key)
    assert deleted.status_code == 200 and deleted.output.status == "success"
    gone = FineTunes.get(job_id, api_key=sdk.key)
    assert gone.status_code == 404 and gone.code == "NotFound"


def test_sdk_v2_client_jobs(server: Server, file_id: str) -> None:
    from dashscope.v2 import Client
    from dashscope.v2.errors import DashScopeError

    client = Client(api_key=server.key, base_url=server.api, max_retries=0)
    job = client.fine_tunes.create(
        model="dashtune-tiny",
        training_file_ids=[file_id],
        mode="efficient_sft",
        hyper_parameters={"lora_rank": 4},
        finetuned_model="my-v2-model",
    )
    assert job.job_id and JOB_ID.match(job.job_id)
    assert job.training_type == "efficient_sft" and job.status == "PENDING"
    got = client.fine_tunes.get(job.job_id)
    assert got.job_id == job.job_id and got.created_at and TIME.match(got.created_at)
    listed = client.fine_tunes.list(page_no=1, page_size=100)
    assert job.job_id in [j.job_id for j in listed.jobs] and listed.total_count >= 1
    import time

    while client.fine_tunes.get(job.job_id).status == "PENDING":
        time.sleep(0.1)
    # The SDK asks offset=1: the documented meaning skips line 1 ("created").
    logs = client.fine_tunes.logs(job.job_id)
    assert "queued" in logs.content and "created" not in logs.content
    assert "created" in client.fine_tunes.logs(job.job_id, offset=0).content
    assert client.fine_tunes.cancel(job.job_id).status == "success"
    assert client.fine_tunes.get(job.job_id).status == "CANCELED"
    assert client.fine_tunes.delete(job.job_id).status == "success"
    with pytest.raises(DashScopeError):
        client.fine_tunes.get(job.job_id)


def test_model_name_is_unique_and_output_naming(server: Server, file_id: str) -> None:
    key = server.new_key("naming")
    with server.http(key) as c:
        fid = upload(c, write_jsonl(Path(server.data_dir) / "n.jsonl", sft_rows(2)))
        create_job(c, fid, model_name="unique-name")
        r = c.post(
            "/fine-tunes",
            json={
                "model": "dashtune-tiny",
                "training_file_ids": [fid],
                "finetuned_output": "unique-name",
            },
        )
        assert_error(r, 409, "Conflict", "unique-name")
        j = create_job(c, fid, job_name="nice", finetuned_output_suffix="sfx")
        assert j["job_name"] == "nice"


def test_list_paging_newest_first_and_model_filter(server: Server, tmp_path: Path) -> None:
    key = server.new_key("lister")
    with server.http(key) as c:
        fid = upload(c, write_jsonl(tmp_path / "l.jsonl", sft_rows(2)))
        made = [create_job(c, fid)["job_id"] for _ in range(5)]
        made.append(create_job(c, fid, model="qwen2.5-0.5b-instruct")["job_id"])
        out = c.get("/fine-tunes", params={"page_no": 1, "page_size": 4}).json()["output"]
        assert out["total"] == 6 and out["page_no"] == 1 and out["page_size"] == 4
        page2 = c.get("/fine-tunes", params={"page_no": 2, "page_size": 4}).json()["output"]
        order = [j["job_id"] for j in out["jobs"] + page2["jobs"]]
        assert order == list(reversed(made))
        empty = c.get("/fine-tunes", params={"page_no": 9, "page_size": 4}).json()["output"]
        assert empty["jobs"] == [] and empty["total"] == 6
        qwen = c.get("/fine-tunes", params={"model": "qwen2.5-0.5b-instruct"}).json()["output"]
        assert [j["job_id"] for j in qwen["jobs"]] == [made[-1]] and qwen["total"] == 1
        # Deleting from the middle keeps the pages dense.
        c.post(f"/fine-tunes/{made[2]}/cancel")
        assert c.delete(f"/fine-tunes/{made[2]}").status_code == 200
        out = c.get("/fine-tunes", params={"page_size": 100}).json()["output"]
        assert [j["job_id"] for j in out["jobs"]] == [m for m in reversed(made) if m != made[2]]
        assert out["total"] == 5
        # ... and the model-filtered pages (ranks per base model) too.
        tiny = [m for m in reversed(made[:5]) if m != made[2]]
        pages = [
            c.get(
                "/fine-tunes", params={"model": "dashtune-tiny", "page_no": n, "page_size": 3}
            ).json()["output"]
            for n in (1, 2, 3)
        ]
        assert [p["total"] for p in pages] == [4, 4, 4]
        assert [j["job_id"] for p in pages for j in p["jobs"]] == tiny
        for bad in ({"page_size": 101}, {"page_size": 0}, {"page_no": 0}, {"page_no": "x"}):
            assert_error(c.get("/fine-tunes", params=bad), 400, "InvalidParameter")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "dashtune-tiny"}, ["training files"]),
        ({"model": "dashtune-tiny", "training_file_ids": []}, ["training files"]),
        ({"training_file_ids": ["x"]}, ["model"]),
        ({"model": "no-such-model", "training_file_ids": ["FID"]}, ["no-such-model"]),
        ({"model": "dashtune-tiny", "training_file_ids": ["nope"]}, ["nope"]),
        (
            {"model": "dashtune-tiny", "training_file_ids": ["FID"], "training_type": "foo"},
            ["training_type"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"n_epoch": 1},
            },
            ["n_epoch"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"n_epochs": 0},
            },
            ["n_epochs", "range"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"learning_rate": "fast"},
            },
            ["learning_rate"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"split": 1},
            },
            ["split"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"lr_scheduler_type": "wavy"},
            },
            ["lr_scheduler_type"],
        ),
        (
            {"model": "dashtune-tiny", "training_file_ids": ["FID"], "hyper_parameters": [1]},
            ["hyper_parameters"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"packing": "maybe"},
            },
            ["packing", "true, false"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"gradient_checkpointing": 2},
            },
            ["gradient_checkpointing", "auto"],
        ),
        (
            {
                "model": "dashtune-tiny",
                "training_file_ids": ["FID"],
                "hyper_parameters": {"attn_implementation": "flash"},
            },
            ["attn_implementation", "sdpa"],
        ),
    ],
)
def test_create_rejects_bad_parameters(
    server: Server, file_id: str, body: dict, words: list
) -> None:  # type: ignore[type-arg]
    body = {
        k: (
            [file_id if x == "FID" else x for x in v]
            if isinstance(v, list) and k.endswith("ids")
            else v
        )
        for k, v in body.items()
    }
    with server.http() as c:
        before = c.get("/fine-tunes").json()["output"]["total"]
        assert_error(c.post("/fine-tunes", json=body), 400, "InvalidParameter", *words)
        assert c.get("/fine-tunes").json()["output"]["total"] == before


def test_hyper_parameter_strings_case_and_not_applied_keys(server: Server, file_id: str) -> None:
    with server.http() as c:
        job = create_job(
            c,
            file_id,
            hyper_parameters={
                "batch_size": "16",
                "lr_scheduler_type": "Linear",
                "data_augmentation": True,
            },
        )
        assert job["resolved_hyper_parameters"]["batch_size"] == 16
        assert job["resolved_hyper_parameters"]["lr_scheduler_type"] == "linear"
        assert job["hyper_parameters"] == {
            "batch_size": "16",
            "lr_scheduler_type": "Linear",
            "data_augmentation": True,
        }
        logs = c.get(f"/fine-tunes/{job['job_id']}/logs").json()["output"]["logs"]
        assert any("data_augmentation" in line and "not applied" in line for line in logs)


def test_malformed_json_wrong_type_and_unknown_routes(server: Server) -> None:
    with server.http() as c:
        assert_error(
            c.post("/fine-tunes", content=b"{nope", headers={"content-type": "application/json"}),
            400,
            "InvalidParameter",
            "json",
        )
        assert_error(
            c.post("/fine-tunes", content=b"[1]", headers={"content-type": "application/json"}),
            400,
            "InvalidParameter",
            "object",
        )
        assert_error(
            c.post(
                "/fine-tunes",
                content=b"model=x",
                headers={"content-type": "application/x-www-form-urlencoded"},
            ),
            415,
            "InvalidParameter",
            "application/json",
        )
        assert_error(c.get("/no-such-route"), 404, "NotFound")
        assert_error(c.put("/fine-tunes"), 405, "MethodNotAllowed", "PUT")
        assert_error(c.get("/fine-tunes/ft-000000000000-0000"), 404, "NotFound")
        assert_error(c.get("/fine-tunes/ft-000000000000-0000/logs"), 404, "NotFound")


def test_auth_errors(server: Server, file_id: str) -> None:
    import httpx

    r = httpx.get(server.api + "/fine-tunes")
    assert_error(r, 401, "InvalidApiKey")
    r = httpx.get(server.api + "/fine-tunes", headers={"Authorization": "Bearer sk-wrong"})
    assert_error(r, 401, "InvalidApiKey")
    r = httpx.post(server.api + "/files", headers={"Authorization": "Basic abc"})
    assert_error(r, 401, "InvalidApiKey")
    with server.http(**{"X-DashScope-WorkSpace": "llm-not-mine"}) as c:
        assert_error(c.get("/fine-tunes"), 403, "AccessDenied", "llm-not-mine")


def test_revoked_key_is_401(server: Server) -> None:
    import subprocess
    import sys

    key = server.new_key("revokee")
    with server.http(key) as c:
        assert c.get("/files").status_code == 200
        subprocess.run(
            [
                str(Path(sys.executable).parent / "dashtune"),
                "keys",
                "revoke",
                key,
                "--data-dir",
                str(server.data_dir),
            ],
            env=server.env,
            check=True,
            capture_output=True,
        )
        # Refused by every server within DASHTUNE_AUTH_CACHE_SECONDS of the revoke (each
        # remembers a key that long; test_key_revocation.py checks two replicas).
        time.sleep(Settings().auth_cache_seconds + 0.5)
        assert_error(c.get("/files"), 401, "InvalidApiKey")


def test_workspaces_isolate_objects(server: Server, file_id: str, tmp_path: Path) -> None:
    with server.http() as owner:
        job = create_job(owner, file_id)
    other = server.new_key("intruder")
    with server.http(other) as c:
        for r in (
            c.get(f"/fine-tunes/{job['job_id']}"),
            c.post(f"/fine-tunes/{job['job_id']}/cancel"),
            c.delete(f"/fine-tunes/{job['job_id']}"),
            c.get(f"/fine-tunes/{job['job_id']}/logs"),
            c.get(f"/fine-tunes/{job['job_id']}/checkpoints"),
            c.get(f"/files/{file_id}"),
            c.delete(f"/files/{file_id}"),
            c.get(f"/files/{file_id}/content"),
        ):
            assert_error(r, 404, "NotFound")
        assert job["job_id"] not in [
            j["job_id"] for j in c.get("/fine-tunes").json()["output"]["jobs"]
        ]
        r = c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [file_id]})
        assert_error(r, 400, "InvalidParameter", file_id)
    # A user in two workspaces selects one with the header; objects stay in their workspace.
    shared_key = server.new_key("teammate", workspace="team-a")
    second = server.new_key("teammate", workspace="team-b")
    with (
        server.http(shared_key) as a,
        server.http(second, **{"X-DashScope-WorkSpace": "team-a"}) as b,
    ):
        fid = upload(a, write_jsonl(tmp_path / "team.jsonl", sft_rows(2)))
        assert b.get(f"/files/{fid}").status_code == 200
    with server.http(second) as b:
        assert_error(b.get(f"/files/{fid}"), 404, "NotFound")


def test_logs_offset_and_line(server: Server, file_id: str) -> None:
    rt = server.runtime()
    from dashtune.services import engine

    with server.http() as c:
        job = create_job(c, file_id)
        # Validation logs in the background: let it finish so the log stops growing.
        wait_status(c, job["job_id"], "QUEUING")
        engine.log(rt, job["job_id"], [f"line {i}" for i in range(1, 6)])
        out = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"offset": 1, "line": 2}).json()[
            "output"
        ]
        total = out["total"]
        assert total >= 6 and len(out["logs"]) == 2
        everything = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()[
            "output"
        ]
        assert everything["logs"][1:3] == out["logs"] and len(everything["logs"]) == total
        past = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"offset": total}).json()["output"]
        assert past["logs"] == [] and past["total"] == total
        clamped = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 5000})
        assert clamped.status_code == 200
        assert_error(
            c.get(f"/fine-tunes/{job['job_id']}/logs", params={"offset": -1}),
            400,
            "InvalidParameter",
            "offset",
        )
    rt.close()


def test_models_list_and_get_with_the_v2_client(server: Server) -> None:
    from dashscope.v2 import Client

    client = Client(api_key=server.key, base_url=server.api, max_retries=0)
    listed = client.models.list(page_no=1, page_size=100)
    names = [m.model for m in listed.models]
    assert "dashtune-tiny" in names and listed.total_count >= len(names)
    assert client.models.get("dashtune-tiny").model == "dashtune-tiny"
    with server.http() as c:
        assert c.get("/models", params={"model": "nope"}).json()["output"]["models"] == []
