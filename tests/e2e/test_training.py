"""Real training through the API on the tiny model: every training type, cancel, kill, delete."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import dashscope
import psutil
import pytest
from dashscope import Files, FineTunes

from tests.conftest import Server
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
from tests.integration.helpers import TIME

pytestmark = pytest.mark.e2e

HP: dict[str, dict[str, Any]] = {
    "sft": {"learning_rate": 3e-3},
    "efficient_sft": {"learning_rate": 5e-3, "lora_rank": 8, "lora_alpha": 16},
    "dpo_full": {"learning_rate": 1e-3},
    "dpo_lora": {"learning_rate": 5e-3},
    "cpt": {"learning_rate": 3e-3},
}
COMMON = {
    "n_epochs": 3,
    "batch_size": 8,
    "max_length": 64,
    "eval_steps": 5,
    "logging_steps": 2,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0,
    "save_strategy": "steps",
    "save_steps": 8,
    "save_total_limit": 2,
}


@pytest.fixture(scope="module")
def trained(
    train_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """One job of each training type, created through the 1.x SDK and run to the end."""
    dashscope.base_http_api_url = train_server.api
    tmp = tmp_path_factory.mktemp("data")
    jobs = {}
    for tt in HP:
        path = write_jsonl(tmp / f"{tt}.jsonl", rows_for(tt))
        fid = Files.upload(str(path), api_key=train_server.key).output["uploaded_files"][0][
            "file_id"
        ]
        validation = None
        if tt == "cpt":  # one job with an explicit validation file instead of the split
            vpath = write_jsonl(tmp / "cpt-val.jsonl", rows_for(tt, 16, seed=7))
            up = Files.upload(str(vpath), api_key=train_server.key)
            validation = [up.output["uploaded_files"][0]["file_id"]]
        rsp = FineTunes.call(
            model="dashtune-tiny",
            training_file_ids=[fid],
            validation_file_ids=validation,
            mode=tt,
            hyper_parameters={**COMMON, **HP[tt]},
            api_key=train_server.key,
        )
        assert rsp.status_code == 200, rsp
        jobs[tt] = rsp.output["job_id"]
    with train_server.http() as c:
        return {tt: wait_terminal(c, jid) for tt, jid in jobs.items()}


@pytest.mark.parametrize("training_type", list(HP))
def test_each_training_type_succeeds_and_learns(
    train_server: Server, trained: dict[str, dict[str, Any]], training_type: str
) -> None:
    job = trained[training_type]
    assert job["status"] == "SUCCEEDED", job
    assert job["usage"] > 0 and job["progress"] == 1.0 and job["end_time"]
    with train_server.http() as c:
        points = c.get(f"/fine-tunes/{job['job_id']}/metrics").json()["output"]["metrics"]
        evals = [p["eval_loss"] for p in points if "eval_loss" in p]
        assert len(evals) >= 2 and evals[-1] < evals[0], evals
        assert any("loss" in p for p in points)
        logs = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()["output"]
        text = "\n".join(logs["logs"])
        for needle in (
            "eval_loss",
            "loss=",
            "tokens/s",
            "checkpoint saved",
            f"training usage {job['usage']}",
        ):
            assert needle in text, needle
        cps = c.get(f"/fine-tunes/{job['job_id']}/checkpoints").json()["output"]
        assert cps and cps[-1]["model_name"] == job["finetuned_output"]
        assert cps[-1]["status"] == "SUCCEEDED" and len(cps) <= 2
        # One time format everywhere (§1): "YYYY-MM-DD HH:MM:SS", as jobs and files.
        assert all(TIME.match(cp["create_time"]) for cp in cps), cps
    final = train_server.data_dir / "jobs" / job["job_id"] / "final"
    names = {p.name for p in final.iterdir()}
    weights = (
        "adapter_model.safetensors"
        if training_type.endswith(("lora", "efficient_sft"))
        else "model.safetensors"
    )
    assert weights in names and "tokenizer.json" in names, names


@pytest.mark.parametrize("training_type", ["efficient_sft", "sft"])
def test_outputs_reload_with_transformers_and_generate(
    train_server: Server, trained: dict[str, dict[str, Any]], training_type: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    final = str(train_server.data_dir / "jobs" / trained[training_type]["job_id"] / "final")
    tok = AutoTokenizer.from_pretrained(final)
    if training_type == "efficient_sft":
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(final)
    else:
        model = AutoModelForCausalLM.from_pretrained(final)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "reverse abcd"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert isinstance(text, str) and out.shape[1] > prompt["input_ids"].shape[1]


def test_continue_training_from_a_tuned_model(
    train_server: Server, trained: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    parent = trained["efficient_sft"]
    with train_server.http() as c:
        fid = upload_rows(c, tmp_path, "more.jsonl", rows_for("sft", 32, 5))

        def continue_with(**hyper: Any) -> Any:
            return c.post(
                "/fine-tunes",
                json={
                    "model": parent["finetuned_output"],
                    "training_file_ids": [fid],
                    "training_type": "efficient_sft",
                    "hyper_parameters": {"n_epochs": 1, "learning_rate": 5e-3, **hyper},
                },
            )

        r = continue_with(lora_rank=4)
        assert r.status_code == 400 and "lora_rank" in r.json()["message"]
        r = continue_with(max_length=64)
        assert r.status_code == 200, r.text
        child = wait_terminal(c, r.json()["output"]["job_id"])
        assert child["status"] == "SUCCEEDED", child
        assert (
            child["base_model"] == "dashtune-tiny" and child["model"] == parent["finetuned_output"]
        )


def test_cancel_while_running_stops_the_worker(train_server: Server, tmp_path: Path) -> None:
    with train_server.http() as c:
        job = {"job_id": start_long_job(c, tmp_path, logging_steps=1)}
        pid = worker_pid(train_server, job["job_id"])
        assert pid and psutil.pid_exists(pid)
        t0 = time.monotonic()
        assert c.post(f"/fine-tunes/{job['job_id']}/cancel").json()["output"] == {
            "status": "success"
        }
        assert c.get(f"/fine-tunes/{job['job_id']}").json()["output"]["status"] in (
            "CANCELING",
            "CANCELED",
        )
        done = wait_terminal(c, job["job_id"], timeout=60)
        assert done["status"] == "CANCELED" and done["end_time"]
        assert time.monotonic() - t0 < 30
        wait_gone(pid)  # no worker left after CANCELED
        # Nothing trains after CANCELED: the metrics stop moving.
        n = len(c.get(f"/fine-tunes/{job['job_id']}/metrics").json()["output"]["metrics"])
        time.sleep(2)
        assert len(c.get(f"/fine-tunes/{job['job_id']}/metrics").json()["output"]["metrics"]) == n
        # Delete removes every artifact of the job.
        artifacts = train_server.data_dir / "jobs" / job["job_id"]
        assert artifacts.exists()
        assert c.delete(f"/fine-tunes/{job['job_id']}").status_code == 200
        assert not artifacts.exists()


def test_killed_worker_is_retried_and_cancel_between_attempts_cancels(
    train_server: Server, tmp_path: Path
) -> None:
    with train_server.http() as c:
        job = {"job_id": start_long_job(c, tmp_path)}
        pid = worker_pid(train_server, job["job_id"])
        assert pid
        os.kill(pid, signal.SIGKILL)
        again = wait_for(c, job["job_id"], lambda j: j["attempts"] == 2, timeout=30)
        assert again["status"] in ("QUEUING", "RUNNING")
        text = "\n".join(
            c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()["output"][
                "logs"
            ]
        )
        assert "(killed by signal 9); attempt 2 of 6" in text
        c.post(f"/fine-tunes/{job['job_id']}/cancel")
        assert wait_terminal(c, job["job_id"], timeout=60)["status"] == "CANCELED"


def test_unloadable_base_model_fails_with_a_clear_message(
    train_server: Server, tmp_path: Path
) -> None:
    with train_server.http() as c:
        fid = upload_rows(c, tmp_path, "q.jsonl", rows_for("sft", 8))
        job = c.post(
            "/fine-tunes", json={"model": "qwen2.5-0.5b-instruct", "training_file_ids": [fid]}
        ).json()["output"]
        done = wait_terminal(c, job["job_id"], timeout=60)
        assert done["status"] == "FAILED" and done["code"] == "ModelLoadError", done
        assert "`hf download Qwen/Qwen2.5-0.5B-Instruct`" in done["message"]


def test_validation_file_is_used_instead_of_the_split(
    train_server: Server, trained: dict[str, dict[str, Any]]
) -> None:
    job = trained["cpt"]
    assert len(job["validation_file_ids"]) == 1
    with train_server.http() as c:
        text = "\n".join(
            c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()["output"][
                "logs"
            ]
        )
    assert "validation data: 16 samples" in text and "held out" not in text, text


def test_export_a_real_checkpoint(train_server: Server, trained: dict[str, dict[str, Any]]) -> None:
    job = trained["sft"]
    with train_server.http() as c:
        cps = c.get(f"/fine-tunes/{job['job_id']}/checkpoints").json()["output"]
        first = cps[0]
        assert first["status"] == "PENDING" and first["checkpoint"] != cps[-1]["checkpoint"]
        r = c.get(
            f"/fine-tunes/{job['job_id']}/export/{first['checkpoint']}",
            params={"model_name": "sft-early"},
        )
        assert r.json()["output"] is True
        deadline = time.monotonic() + 30
        while (cp := c.get(f"/fine-tunes/{job['job_id']}/checkpoints").json()["output"][0])[
            "status"
        ] != "SUCCEEDED":
            assert time.monotonic() < deadline, cp
            time.sleep(0.2)
    exported = train_server.data_dir / "models" / job["job_id"] / first["checkpoint"]
    assert (exported / "model.safetensors").exists() and (exported / "tokenizer.json").exists()


def test_stream_shows_progress_while_the_job_runs(train_server: Server, tmp_path: Path) -> None:
    dashscope.base_http_api_url = train_server.api
    path = write_jsonl(tmp_path / "s.jsonl", rows_for("sft", 64, seed=3))
    fid = Files.upload(str(path), api_key=train_server.key).output["uploaded_files"][0]["file_id"]
    job_id = FineTunes.call(
        model="dashtune-tiny",
        training_file_ids=[fid],
        hyper_parameters={**COMMON, "learning_rate": 3e-3},
        api_key=train_server.key,
    ).output["job_id"]
    kinds: dict[str, list[Any]] = {"status": [], "log": [], "metrics": []}
    for event in FineTunes.stream_events(job_id, api_key=train_server.key):
        # The 1.x SDK yields each `data:` payload as the raw JSON text.
        payload = json.loads(event.output) if isinstance(event.output, str) else event.output
        kinds[payload["type"]].append(payload)
    statuses = [e["status"] for e in kinds["status"]]
    assert "RUNNING" in statuses and statuses[-1] == "SUCCEEDED", statuses
    assert any("loss=" in e["line"] for e in kinds["log"])
    assert any("loss" in e for e in kinds["metrics"])
