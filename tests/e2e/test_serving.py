"""Deployments and inference, end to end: real training jobs, a real serving process,
driven with the `dashscope` SDK (Generation, Deployments, FineTunes) and the `openai` SDK.

One server (SQLite, local executor, serving on) for the module: three jobs teach the
tiny model three fixed answers (two LoRA adapters and one full fine-tune), then the
tests deploy and call them. Tests run in file order and build on each other's state.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import httpx
import openai
import pytest
from dashscope import Deployments, Files, FineTunes, Generation

from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import wait_terminal, write_jsonl
from tests.e2e.serving_helpers import (
    HP_COMMON,
    TASKS,
    constant_answer_rows,
    process_maps,
    serving_state,
    serving_stats,
    wait_deployment,
    write_catalog,
)
from tests.integration.helpers import TIME, assert_error

pytestmark = pytest.mark.e2e

HELLO = [{"role": "user", "content": "hello"}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 8}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, database_factory: Any) -> Iterator[Server]:
    """SQLite by default; DASHTUNE_E2E_BACKEND=postgres runs the module on PostgreSQL."""
    backend = os.environ.get("DASHTUNE_E2E_BACKEND", "sqlite")
    data_dir = tmp_path_factory.mktemp(f"serving-{backend}")
    catalog = write_catalog(data_dir / "catalog.yaml", data_dir / "no-such-weights")
    server = start_server(
        data_dir,
        database_factory(backend, data_dir),
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_MAX_CONCURRENT_JOBS="2",
        DASHTUNE_SERVING="true",
        DASHTUNE_CATALOG_PATH=str(catalog),
    )
    dashscope.base_http_api_url = server.api
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def trained(srv: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The three jobs of TASKS, created through the 1.x SDK and run to SUCCEEDED."""
    tmp = tmp_path_factory.mktemp("serving-data")
    jobs = {}
    for name, task in TASKS.items():
        path = write_jsonl(tmp / f"{name}.jsonl", constant_answer_rows(task["answer"]))
        up = Files.upload(str(path), api_key=srv.key)
        rsp = FineTunes.call(
            model="dashtune-tiny",
            training_file_ids=[up.output["uploaded_files"][0]["file_id"]],
            mode=task["type"],
            hyper_parameters={**HP_COMMON, **task["hp"]},
            api_key=srv.key,
        )
        assert rsp.status_code == 200, rsp
        jobs[name] = rsp.output
    with srv.http() as c:
        done = {name: wait_terminal(c, job["job_id"], timeout=180) for name, job in jobs.items()}
    for name, job in done.items():
        assert job["status"] == "SUCCEEDED", (name, job)
    return done


def native(srv: Server, model: str, **params: Any) -> Any:
    """Generation.call (message format), asserting success; returns the response."""
    rsp = Generation.call(
        model=model, messages=HELLO, result_format="message", api_key=srv.key, **params
    )
    assert rsp.status_code == 200, rsp
    return rsp


def answer(srv: Server, model: str, **params: Any) -> str:
    content: str = native(srv, model, **{**GREEDY, **params}).output.choices[0].message.content
    return content


def oai(srv: Server, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=srv.base + "/compatible-mode/v1", api_key=key or srv.key, max_retries=0
    )


def deploy(srv: Server, model: str, suffix: str, capacity: int = 1) -> dict[str, Any]:
    rsp = Deployments.call(model=model, capacity=capacity, suffix=suffix, api_key=srv.key)
    assert rsp.status_code == 200, rsp
    assert rsp.output.status == "PENDING" and rsp.output.deployed_model == f"{model}-{suffix}"
    with srv.http() as c:
        return wait_deployment(c, rsp.output.deployed_model)


# -- base models ---------------------------------------------------------------------------


def test_base_model_answers_in_every_shape(srv: Server) -> None:
    """A catalog model is callable undeployed (loaded on first use), natively and OpenAI-style,
    streamed or not; greedy answers agree across all of them."""
    rsp = native(srv, "dashtune-tiny", **GREEDY)
    choice = rsp.output.choices[0]
    text = choice.message.content
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    usage = rsp.usage
    assert usage.input_tokens > 0 and 0 < usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens

    plain = Generation.call(model="dashtune-tiny", prompt="hello", api_key=srv.key, **GREEDY)
    assert plain.status_code == 200 and plain.output.text == text
    assert plain.output.finish_reason == choice.finish_reason

    # Streams: cumulative text by default, deltas with incremental_output; same final text.
    frames = list(
        Generation.call(
            model="dashtune-tiny", messages=HELLO, result_format="message", stream=True,
            api_key=srv.key, **GREEDY,
        )
    )  # fmt: skip
    assert all(f.status_code == 200 for f in frames)
    assert frames[-1].output.choices[0].message.content == text
    assert frames[-1].output.choices[0].finish_reason == choice.finish_reason
    assert all(f.output.choices[0].finish_reason == "null" for f in frames[:-1])
    deltas = list(
        Generation.call(
            model="dashtune-tiny", messages=HELLO, result_format="message", stream=True,
            incremental_output=True, api_key=srv.key, **GREEDY,
        )
    )  # fmt: skip
    assert "".join(f.output.choices[0].message.content for f in deltas) == text
    assert deltas[-1].usage.output_tokens == usage.output_tokens

    client = oai(srv)
    completion = client.chat.completions.create(
        model="dashtune-tiny", messages=HELLO, temperature=0, max_tokens=8
    )
    assert completion.choices[0].message.content == text
    assert completion.usage is not None and completion.usage.total_tokens == usage.total_tokens
    chunks = list(
        client.chat.completions.create(
            model="dashtune-tiny", messages=HELLO, temperature=0, max_tokens=8, stream=True,
            stream_options={"include_usage": True},
        )
    )  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == usage.output_tokens
    assert "dashtune-tiny" in [m.id for m in client.models.list()]


def test_api_process_never_imports_torch(srv: Server) -> None:
    """The model lives in the serving process; the API process stays free of torch."""
    state = serving_state(srv)
    assert state["pid"] != srv.proc.pid
    assert "libtorch" in process_maps(state["pid"])
    assert "libtorch" not in process_maps(srv.proc.pid)


def test_serving_stats_need_the_token(srv: Server) -> None:
    """/stats lists every tenant's adapter paths: loopback is not enough, the token is."""
    native(srv, "dashtune-tiny", **GREEDY)  # the serving process is up
    state = serving_state(srv)
    assert httpx.get(state["url"] + "/stats", timeout=10).status_code == 401
    assert serving_stats(srv)["models_loaded"] >= 1
    assert (srv.data_dir / "serving.json").stat().st_mode & 0o077 == 0


def test_sampling_parameters_take_effect(srv: Server) -> None:
    short = native(srv, "dashtune-tiny", temperature=0, max_tokens=3)
    assert short.usage.output_tokens == 3 and short.output.choices[0].finish_reason == "length"

    seeded = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 12}
    first = answer(srv, "dashtune-tiny", seed=7, **seeded)
    assert answer(srv, "dashtune-tiny", seed=7, **seeded) == first
    assert answer(srv, "dashtune-tiny", seed=7, **seeded, stream=False) == first

    full = answer(srv, "dashtune-tiny", temperature=0, max_tokens=12)
    stop = full[2:4]
    assert stop, full
    cut = native(srv, "dashtune-tiny", temperature=0, max_tokens=12, stop=[stop])
    assert cut.output.choices[0].message.content == full[: full.find(stop)]
    assert cut.output.choices[0].finish_reason == "stop"

    bad = Generation.call(model="dashtune-tiny", messages=HELLO, temperature=5, api_key=srv.key)
    assert bad.status_code == 400 and bad.code == "InvalidParameter"
    assert "temperature" in bad.message
    with pytest.raises(openai.BadRequestError) as exc:
        oai(srv).chat.completions.create(model="dashtune-tiny", messages=HELLO, top_p=0)
    assert exc.value.body["code"] == "InvalidParameter" and "top_p" in exc.value.body["message"]
    with pytest.raises(openai.BadRequestError) as role:
        oai(srv).chat.completions.create(
            model="dashtune-tiny", messages=[{"role": "tool", "content": "x"}]
        )
    assert "messages.0.role" in role.value.body["message"]


# -- tuned models ------------------------------------------------------------------------


def test_tuned_lora_answers_what_it_learned(srv: Server, trained: dict[str, Any]) -> None:
    model = trained["lora_z"]["finetuned_output"]
    base = answer(srv, "dashtune-tiny")
    dep = deploy(srv, model, "z", capacity=2)
    assert dep["base_model"] == "dashtune-tiny" and dep["model_name"] == model
    tuned = answer(srv, dep["deployed_model"])
    assert tuned.startswith("zz") and tuned != base
    streamed = oai(srv).chat.completions.create(
        model=dep["deployed_model"], messages=HELLO, temperature=0, max_tokens=8, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == tuned


def test_two_loras_share_one_loaded_base(srv: Server, trained: dict[str, Any]) -> None:
    dep_q = deploy(srv, trained["lora_q"]["finetuned_output"], "q")
    stats = serving_stats(srv)
    assert stats["models_loaded"] == 1 and stats["adapters_loaded"] == 2, stats
    (only,) = stats["models"]
    assert len(only["keys"]) == 3  # the catalog name and both deployments
    # Adapters switch per request on the one base; the base itself stays as it was.
    assert answer(srv, dep_q["deployed_model"]).startswith("qq")
    assert answer(srv, f"{trained['lora_z']['finetuned_output']}-z").startswith("zz")
    assert not answer(srv, "dashtune-tiny").startswith(("qq", "zz"))


def test_full_fine_tune_is_a_model_of_its_own(srv: Server, trained: dict[str, Any]) -> None:
    model = trained["full_x"]["finetuned_output"]
    rsp = Generation.call(model=model, messages=HELLO, api_key=srv.key)  # not deployed yet
    assert rsp.status_code == 400 and rsp.code == "UnsupportedOperation", rsp
    assert "not deployed" in rsp.message
    dep = deploy(srv, model, "x")
    assert answer(srv, dep["deployed_model"]).startswith("xy")
    stats = serving_stats(srv)
    assert stats["models_loaded"] == 2 and stats["adapters_loaded"] == 2, stats


def test_deployment_objects_list_scale_and_stream(srv: Server, trained: dict[str, Any]) -> None:
    name = f"{trained['lora_z']['finetuned_output']}-z"
    again = Deployments.call(
        model=trained["lora_z"]["finetuned_output"], capacity=1, suffix="z", api_key=srv.key
    )
    assert again.status_code == 409 and again.code == "Conflict"
    assert again.message == f"Model instance {name} already exists, please specify a suffix."

    listed = Deployments.list(page_no=1, page_size=2, api_key=srv.key)
    assert listed.status_code == 200 and listed.output.total == 3
    assert len(listed.output.deployments) == 2
    for d in listed.output.deployments:  # one time format everywhere, as jobs and files
        assert TIME.match(d["gmt_create"]) and TIME.match(d["gmt_modified"]), d

    scaled = Deployments.scale(name, capacity=3, api_key=srv.key)
    assert scaled.status_code == 200 and scaled.output.capacity == 3
    with srv.http() as c:
        assert wait_deployment(c, name)["ready_capacity"] == 3
        bad = c.put(f"/deployments/{name}/scale", json={"capacity": 0})
        assert_error(bad, 400, "InvalidParameter", "capacity")
        # The stream shows the object until it is settled (here: at once).
        with c.stream("GET", f"/deployments/{name}/stream") as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line for line in r.iter_lines() if line.startswith("data:")]
        assert json.loads(lines[-1][5:])["status"] == "RUNNING"
    slots = {e["key"]: e["capacity"] for e in serving_stats(srv)["endpoints"]}
    assert 3 in slots.values(), slots


def test_job_delete_waits_for_its_deployment(srv: Server, trained: dict[str, Any]) -> None:
    job_id = trained["lora_q"]["job_id"]
    name = f"{trained['lora_q']['finetuned_output']}-q"
    refused = FineTunes.delete(job_id, api_key=srv.key)
    assert refused.status_code == 400 and refused.code == "UnsupportedOperation"
    assert name in refused.message
    gone = Deployments.delete(name, api_key=srv.key)
    assert gone.status_code == 200 and gone.output.status == "success"
    assert FineTunes.delete(job_id, api_key=srv.key).status_code == 200
    with srv.http() as c:  # the supervisor unloads it, then the deployment is gone
        deadline = time.monotonic() + 30
        while c.get(f"/deployments/{name}").status_code != 404:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert serving_stats(srv)["adapters_loaded"] == 1
    rsp = Generation.call(model=name, messages=HELLO, api_key=srv.key)
    assert rsp.status_code == 404 and rsp.code == "NotFound"


def test_unknown_and_not_running_models_in_both_shapes(srv: Server) -> None:
    with srv.http() as c:
        r = c.post(
            "/services/aigc/text-generation/generation",
            json={"model": "no-such-model", "input": {"messages": HELLO}},
        )
        assert_error(r, 404, "NotFound", "no-such-model")
        broken = c.post("/deployments", json={"model_name": "broken-base", "capacity": 1})
        assert broken.status_code == 200, broken.text
        name = broken.json()["output"]["deployed_model"]
        failed = wait_deployment(c, name, want=("FAILED",))
        assert "no-such-weights" in failed["message"]
        r = c.post(
            "/services/aigc/text-generation/generation",
            json={"model": name, "input": {"messages": HELLO}},
        )
        assert_error(r, 400, "UnsupportedOperation", "FAILED")
        unknown = c.post("/deployments", json={"model_name": "nope", "capacity": 1})
        assert_error(unknown, 400, "InvalidParameter", "nope")

    client = oai(srv)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert missing.value.body["code"] == "NotFound"
    assert missing.value.response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as not_running:
        client.chat.completions.create(model=name, messages=HELLO, stream=True)
    assert not_running.value.body["code"] == "UnsupportedOperation"
    with pytest.raises(openai.AuthenticationError):
        oai(srv, key="sk-wrong").chat.completions.create(model="dashtune-tiny", messages=HELLO)


def test_other_workspaces_see_nothing(srv: Server, trained: dict[str, Any]) -> None:
    other = srv.new_key("serving-outsider")
    name = f"{trained['lora_z']['finetuned_output']}-z"
    assert Deployments.get(name, api_key=other).status_code == 404
    assert Deployments.delete(name, api_key=other).status_code == 404
    assert Deployments.list(api_key=other).output.total == 0
    rsp = Generation.call(model=name, messages=HELLO, api_key=other)
    assert rsp.status_code == 404 and rsp.code == "NotFound"
    theirs = Deployments.call(
        model=trained["lora_z"]["finetuned_output"], capacity=1, api_key=other
    )
    assert theirs.status_code == 400 and theirs.code == "InvalidParameter"


def test_a_killed_serving_process_is_restarted(srv: Server, trained: dict[str, Any]) -> None:
    name = f"{trained['lora_z']['finetuned_output']}-z"
    before = serving_state(srv)["pid"]
    os.kill(before, signal.SIGKILL)
    # While it restarts, chat answers a retryable 503 with Retry-After, never a 400.
    refused: list[httpx.Response] = []
    deadline = time.monotonic() + 120
    with srv.http() as c:
        while True:
            r = c.post(
                "/services/aigc/text-generation/generation",
                json={"model": name, "input": {"messages": HELLO}},
            )
            if r.status_code == 200 and serving_state(srv)["pid"] != before:
                break
            if r.status_code != 200:
                refused.append(r)
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "ServiceUnavailable" and r.headers["Retry-After"]
            assert time.monotonic() < deadline, [x.text for x in refused[-3:]]
            time.sleep(0.1)
        assert refused, "the restart went unnoticed: no request saw it"
        dep = wait_deployment(c, name, timeout=90)
    assert dep["ready_capacity"] == 3
    assert answer(srv, name).startswith("zz")


def test_deleting_everything_unloads_everything(srv: Server, tmp_path: Path) -> None:
    with srv.http() as c:
        for dep in c.get("/deployments", params={"page_size": 100}).json()["output"]["deployments"]:
            assert c.delete(f"/deployments/{dep['deployed_model']}").status_code == 200
        deadline = time.monotonic() + 30
        while c.get("/deployments").json()["output"]["total"]:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    keys = [e["key"] for e in serving_stats(srv)["endpoints"]]
    assert all(not k.startswith("dep-") for k in keys), keys
    assert httpx.get(srv.base + "/health").status_code == 200
