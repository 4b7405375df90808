"""The OpenAI fine-tuning API (/compatible-mode/v1) through the official `openai` SDK, on
the same jobs and files as the DashScope API (the control plane: jobs stop at queued)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import openai
import pytest
from dashscope import FineTunes

from tests.conftest import BACKENDS, Server, start_server, stop_server
from tests.integration.helpers import assert_error, create_job, sft_rows, upload, write_jsonl


def oai(srv: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.base + "/compatible-mode/v1", api_key=key, max_retries=0)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


WEIGHTED = [
    {
        "messages": [
            {"role": "user", "content": f"reverse w{i}ord"},
            {"role": "assistant", "content": "not this", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": f"dro{i}w", "weight": 1},
        ]
    }
    for i in range(4)
]
PREFERENCES = [
    {
        "input": {"messages": [{"role": "user", "content": f"reverse w{i}"}]},
        "preferred_output": [{"role": "assistant", "content": f"{i}w"}],
        "non_preferred_output": [{"role": "assistant", "content": "no"}],
    }
    for i in range(4)
]


@pytest.fixture
def key(server: Server, request: pytest.FixtureRequest) -> str:
    """A user of its own per test: the per-user quota is not shared with other tests."""
    return server.new_key(f"oai-{request.node.name[:40]}")


def test_files_upload_list_retrieve_content_delete(server: Server, key: str) -> None:
    client = oai(server, key)
    raw = jsonl(WEIGHTED)
    made = [
        client.files.create(file=(f"t{i}.jsonl", io.BytesIO(raw)), purpose="fine-tune")
        for i in range(3)
    ]
    f = made[0]
    assert f.object == "file" and f.purpose == "fine-tune" and f.bytes == len(raw)
    assert f.filename == "t0.jsonl" and f.created_at > 0
    assert client.files.retrieve(f.id).id == f.id
    assert client.files.content(f.id).read() == raw

    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    ids = [x.id for x in client.files.list(limit=2)]  # iterating follows `after`
    # Newest first; files of the same second in a stable order, the same on every page.
    assert sorted(ids) == sorted(m.id for m in made)
    assert ids == [x.id for x in client.files.list().data]
    assert [x.id for x in client.files.list(order="asc").data] == ids[::-1]

    deleted = client.files.delete(f.id)
    assert deleted.deleted and deleted.id == f.id
    with pytest.raises(openai.NotFoundError) as gone:
        client.files.retrieve(f.id)
    assert gone.value.response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", io.BytesIO(raw)), purpose="assistants")


def test_create_supervised_and_dpo_then_list_retrieve_events_cancel(
    server: Server, key: str
) -> None:
    client = oai(server, key)
    sft_file = client.files.create(
        file=("w.jsonl", io.BytesIO(jsonl(WEIGHTED))), purpose="fine-tune"
    )
    dpo_file = client.files.create(
        file=("p.jsonl", io.BytesIO(jsonl(PREFERENCES))), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="dashtune-tiny",
        training_file=sft_file.id,
        suffix="weighted",
        seed=7,
        metadata={"team": "a"},
        method={
            "type": "supervised",
            "supervised": {
                "hyperparameters": {
                    "n_epochs": 3,
                    "batch_size": "auto",
                    "learning_rate_multiplier": 2,
                }
            },
        },
    )
    assert job.object == "fine_tuning.job" and job.status == "validating_files"
    assert job.model == "dashtune-tiny" and job.training_file == sft_file.id
    assert job.seed == 7 and job.metadata == {"team": "a"}
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 8
    assert job.method is not None and job.method.type == "supervised"
    assert job.fine_tuned_model is None

    dpo = client.fine_tuning.jobs.create(
        model="dashtune-tiny",
        training_file=dpo_file.id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1}}},
    )
    assert dpo.method is not None and dpo.method.type == "dpo"
    assert dpo.method.dpo is not None and dpo.method.dpo.hyperparameters is not None
    assert dpo.method.dpo.hyperparameters.beta == 0.2

    # The same jobs seen by the DashScope API: mapped hyper-parameters, the suffix in the name.
    with server.http(key) as c:
        native = c.get(f"/fine-tunes/{job.id}").json()["output"]
        assert native["training_type"] == "sft"
        assert native["resolved_hyper_parameters"]["learning_rate"] == pytest.approx(2e-5)
        assert native["resolved_hyper_parameters"]["seed"] == 7
        assert native["finetuned_output"] == f"dashtune-tiny-weighted-{job.id}"
        native_dpo = c.get(f"/fine-tunes/{dpo.id}").json()["output"]
        assert native_dpo["training_type"] == "dpo_full"
        assert native_dpo["resolved_hyper_parameters"]["dpo_beta"] == 0.2

    # The scheduler validates both files (OpenAI formats are converted) and queues them.
    for made in (job, dpo):
        got = wait_openai_status(client, made.id, timeout=120)  # a loaded machine is slow
        assert got.status == "queued", got

    listed = client.fine_tuning.jobs.list(limit=1)
    assert [j.id for j in listed.data] == [dpo.id] and listed.has_more
    every = [j.id for j in client.fine_tuning.jobs.list(limit=1)]
    assert every == [dpo.id, job.id]
    tagged = client.fine_tuning.jobs.list(metadata={"team": "a"})
    assert [j.id for j in tagged.data] == [job.id]
    assert client.fine_tuning.jobs.list(metadata={"team": "b"}).data == []

    events = client.fine_tuning.jobs.list_events(job.id, limit=1)
    assert len(events.data) == 1 and events.has_more
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id).data]
    assert "queued" in messages[0] and "created" in messages[-1]  # newest first
    paged = [e.id for e in client.fine_tuning.jobs.list_events(job.id, limit=1)]
    assert len(paged) == len(messages) and len(set(paged)) == len(paged)
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []

    # Pause/resume (a queued job pauses at once); resuming twice is refused.
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.jobs.resume(job.id)
    assert "resume" in refused.value.response.json()["error"]["message"]

    canceled = client.fine_tuning.jobs.cancel(job.id)
    assert canceled.status == "cancelled" and canceled.finished_at is not None
    assert client.fine_tuning.jobs.cancel(dpo.id).status == "cancelled"


def test_one_job_two_views(server: Server, key: str, tmp_path: Path, monkeypatch: Any) -> None:
    client = oai(server, key)
    monkeypatch.setattr(dashscope, "base_http_api_url", server.api)
    # Created through OpenAI's API, read, canceled and deleted through the DashScope SDK.
    f = client.files.create(file=("a.jsonl", io.BytesIO(jsonl(sft_rows(4)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="dashtune-tiny", training_file=f.id)
    got = FineTunes.get(job.id, api_key=key)
    assert got.status_code == 200 and got.output["training_file_ids"] == [f.id]
    assert FineTunes.cancel(job.id, api_key=key).status_code == 200
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert FineTunes.delete(job.id, api_key=key).status_code == 200
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.jobs.retrieve(job.id)

    # Created through DashScope's API, listed, canceled and deleted through OpenAI's.
    with server.http(key) as c:
        fid = upload(c, write_jsonl(tmp_path / "b.jsonl", sft_rows(4)))
        native = create_job(c, fid, hyper_parameters={"n_epochs": 2})
    seen = client.fine_tuning.jobs.retrieve(native["job_id"])
    assert seen.training_file == fid and seen.hyperparameters.n_epochs == 2
    assert seen.method is not None and seen.method.type == "supervised"
    assert native["job_id"] in [j.id for j in client.fine_tuning.jobs.list().data]
    assert client.files.retrieve(fid).filename == "b.jsonl"
    client.fine_tuning.jobs.cancel(native["job_id"])
    gone = client.delete(f"/fine_tuning/jobs/{native['job_id']}", cast_to=object)
    assert gone == {"id": native["job_id"], "object": "fine_tuning.job", "deleted": True}
    assert FineTunes.get(native["job_id"], api_key=key).status_code == 404


def test_openai_errors(server: Server, key: str) -> None:
    client = oai(server, key)
    f = client.files.create(file=("e.jsonl", io.BytesIO(jsonl(sft_rows(4)))), purpose="fine-tune")

    def error(exc: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
        body = exc.value.response.json()
        assert set(body["error"]) >= {"message", "type", "code", "param"}, body
        assert body["error"]["message"]
        return dict(body["error"])

    with pytest.raises(openai.BadRequestError) as unknown_file:
        client.fine_tuning.jobs.create(model="dashtune-tiny", training_file="file-nope")
    assert "file-nope" in error(unknown_file)["message"]
    with pytest.raises(openai.BadRequestError) as bad_hp:
        client.fine_tuning.jobs.create(
            model="dashtune-tiny", training_file=f.id, hyperparameters={"n_epochs": 0}
        )
    assert error(bad_hp)["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad_lr:
        client.fine_tuning.jobs.create(
            model="dashtune-tiny",
            training_file=f.id,
            hyperparameters={"learning_rate_multiplier": -1},
        )
    assert "learning_rate_multiplier" in error(bad_lr)["message"]
    with pytest.raises(openai.BadRequestError) as bad_method:
        client.fine_tuning.jobs.create(
            model="dashtune-tiny", training_file=f.id, method={"type": "reinforcement"}
        )
    assert "method" in error(bad_method)["message"]
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=f.id)
    assert "gpt-4o-mini" in error(bad_model)["message"]
    with pytest.raises(openai.NotFoundError) as unknown_job:
        client.fine_tuning.jobs.retrieve("ft-000000000000-0000")
    assert error(unknown_job)["code"] == "NotFound"

    mine = client.fine_tuning.jobs.create(model="dashtune-tiny", training_file=f.id)
    other = oai(server, server.new_key("oai-other-tenant"))
    for call in (
        lambda: other.fine_tuning.jobs.retrieve(mine.id),
        lambda: other.fine_tuning.jobs.cancel(mine.id),
        lambda: other.fine_tuning.jobs.list_events(mine.id),
        lambda: other.files.retrieve(f.id),
    ):
        with pytest.raises(openai.NotFoundError) as foreign:
            call()
        error(foreign)
    assert mine.id not in [j.id for j in other.fine_tuning.jobs.list().data]
    with pytest.raises(openai.AuthenticationError) as no_key:
        oai(server, "sk-wrong").fine_tuning.jobs.list()
    assert error(no_key)["type"] == "authentication_error"
    client.fine_tuning.jobs.cancel(mine.id)


def wait_openai_status(client: openai.OpenAI, job_id: str, timeout: float = 30) -> Any:
    """The job once the scheduler has validated its files (no longer validating_files)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status != "validating_files":
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.1)


def test_validation_file_in_both_views(server: Server, key: str, tmp_path: Path) -> None:
    client = oai(server, key)
    train = client.files.create(file=("t.jsonl", io.BytesIO(jsonl(WEIGHTED))), purpose="fine-tune")
    valid = client.files.create(
        file=("v.jsonl", io.BytesIO(jsonl(sft_rows(2)))), purpose="fine-tune"
    )
    job = client.fine_tuning.jobs.create(
        model="dashtune-tiny", training_file=train.id, validation_file=valid.id
    )
    assert job.validation_file == valid.id and job.training_file == train.id
    assert client.fine_tuning.jobs.retrieve(job.id).validation_file == valid.id
    listed = {j.id: j for j in client.fine_tuning.jobs.list().data}
    assert listed[job.id].validation_file == valid.id
    with server.http(key) as c:
        native = c.get(f"/fine-tunes/{job.id}").json()["output"]
    assert native["training_file_ids"] == [train.id]
    assert native["validation_file_ids"] == [valid.id]
    # Both files are validated, and the job is queued.
    assert wait_openai_status(client, job.id).status == "queued"
    with server.http(key) as c:
        native_job = create_job(c, upload(c, write_jsonl(tmp_path / "n.jsonl", sft_rows(2))))
    assert client.fine_tuning.jobs.retrieve(native_job["job_id"]).validation_file is None

    # The validation file is checked as training data is: a bad one fails the job, named.
    broken = sft_rows(2)
    broken[1] = {"messages": [{"role": "user", "content": "no answer"}]}
    bad = client.files.create(file=("bad-v.jsonl", io.BytesIO(jsonl(broken))), purpose="fine-tune")
    failing = client.fine_tuning.jobs.create(
        model="dashtune-tiny", training_file=train.id, validation_file=bad.id
    )
    failed = wait_openai_status(client, failing.id)
    assert failed.status == "failed" and failed.error is not None, failed
    assert "validation file 'bad-v.jsonl'" in failed.error.message
    assert "line 2" in failed.error.message
    client.fine_tuning.jobs.cancel(job.id)
    client.fine_tuning.jobs.cancel(native_job["job_id"])


def test_validation_file_errors(server: Server, key: str) -> None:
    client = oai(server, key)
    train = client.files.create(
        file=("t.jsonl", io.BytesIO(jsonl(sft_rows(2)))), purpose="fine-tune"
    )
    other = oai(server, server.new_key("oai-validation-outsider"))
    foreign = other.files.create(
        file=("f.jsonl", io.BytesIO(jsonl(sft_rows(2)))), purpose="fine-tune"
    )

    def refused(validation_file: str) -> dict[str, Any]:
        with pytest.raises(openai.BadRequestError) as exc:
            client.fine_tuning.jobs.create(
                model="dashtune-tiny", training_file=train.id, validation_file=validation_file
            )
        body = exc.value.response.json()
        assert set(body["error"]) >= {"message", "type", "code", "param"}, body
        assert body["error"]["type"] == "invalid_request_error", body
        return dict(body["error"])

    # Unknown, and another tenant's file, are the same 400 as for training_file.
    unknown = refused("file-nope")
    assert unknown["code"] == "InvalidParameter" and "file-nope" in unknown["message"]
    assert foreign.id in refused(foreign.id)["message"]
    assert "both" in refused(train.id)["message"]  # training and validation at once
    # Nothing was created by the refused requests.
    assert client.fine_tuning.jobs.list().data == []


@pytest.fixture(scope="module", params=BACKENDS)
def quota_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_factory: Any
) -> Iterator[Server]:
    """A control plane whose users may hold two jobs."""
    data_dir = tmp_path_factory.mktemp(f"quota-{request.param}")
    srv = start_server(
        data_dir,
        database_factory(request.param, data_dir),
        DASHTUNE_EXECUTOR="none",
        DASHTUNE_SERVING="false",
        DASHTUNE_JOB_QUOTA="2",
    )
    yield srv
    stop_server(srv)


def test_quota_is_shared_by_both_apis(quota_server: Server, tmp_path: Path) -> None:
    srv = quota_server
    key = srv.new_key("oai-quota")
    client = oai(srv, key)
    f = client.files.create(file=("q.jsonl", io.BytesIO(jsonl(sft_rows(2)))), purpose="fine-tune")

    def openai_full() -> None:
        with pytest.raises(openai.RateLimitError) as full:
            client.fine_tuning.jobs.create(model="dashtune-tiny", training_file=f.id)
        error = full.value.response.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "Throttling", error
        assert "2 of your fine-tune jobs count against the limit of 2" in error["message"]

    with srv.http(key) as c:

        def dashscope_full() -> None:
            r = c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [f.id]})
            assert_error(r, 429, "Throttling", "2 of your fine-tune jobs count")

        by_openai = client.fine_tuning.jobs.create(model="dashtune-tiny", training_file=f.id)
        by_dashscope = create_job(c, f.id)["job_id"]
        # One job of each API fills the quota of both.
        openai_full()
        dashscope_full()
        # Freed through one API, taken through the other, and full again in both.
        assert c.post(f"/fine-tunes/{by_openai.id}/cancel").status_code == 200
        again = client.fine_tuning.jobs.create(model="dashtune-tiny", training_file=f.id)
        openai_full()
        dashscope_full()
        client.fine_tuning.jobs.cancel(by_dashscope)
        create_job(c, f.id)
        openai_full()
        dashscope_full()
        # Another user's quota is their own.
        other = oai(srv, srv.new_key("oai-quota-other"))
        g = other.files.create(
            file=("g.jsonl", io.BytesIO(jsonl(sft_rows(2)))), purpose="fine-tune"
        )
        assert other.fine_tuning.jobs.create(model="dashtune-tiny", training_file=g.id).id
        client.fine_tuning.jobs.cancel(again.id)
