"""The OpenAI fine-tuning API end to end: a real job trained through the `openai` SDK,
its checkpoints and events, chat with its `fine_tuned_model` with no deploy step, and the
signed webhooks its life sends."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import openai
import pytest

from tests.conftest import Server
from tests.e2e.conftest import words
from tests.e2e.serving_helpers import serving_stats
from tests.webhook_receiver import receiver

pytestmark = pytest.mark.e2e
ENDED = ("succeeded", "failed", "cancelled")


def weighted_rows(n: int = 32) -> list[dict[str, Any]]:
    """Two assistant turns a row: only the second (weight 1) is trained."""
    return [
        {
            "messages": [
                {"role": "user", "content": w},
                {"role": "assistant", "content": "abc", "weight": 0},
                {"role": "user", "content": w[::-1]},
                {"role": "assistant", "content": "xyx", "weight": 1},
            ]
        }
        for w in words(n, seed=1)
    ]


def wait_ended(client: openai.OpenAI, job_id: str, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ENDED:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.5)


def test_train_with_the_openai_sdk_then_chat_with_fine_tuned_model(train_server: Server) -> None:
    client = openai.OpenAI(
        base_url=train_server.base + "/compatible-mode/v1",
        api_key=train_server.key,
        max_retries=0,
    )
    with receiver() as rx, train_server.http() as c:
        hook = c.post(
            "/webhooks",
            json={
                "url": rx.url,
                "event_types": ["fine_tune.running", "fine_tune.succeeded", "fine_tune.failed"],
            },
        )
        assert hook.status_code == 200, hook.text
        rx.secret = hook.json()["output"]["secret"]
        job_id = train_and_chat(client)
        got = rx.wait(lambda r: len(r) >= 2)
        assert not rx.bad
        assert [g.payload["type"] for g in got] == ["fine_tune.running", "fine_tune.succeeded"]
        assert {g.payload["data"]["job_id"] for g in got} == {job_id}
        assert c.delete(f"/webhooks/{hook.json()['output']['webhook_id']}").status_code == 200

        # Deleted through the DashScope API: the model it loaded on demand is unloaded.
        def tuned_keys() -> list[str]:
            endpoints = serving_stats(train_server).get("endpoints", [])
            return [str(e["key"]) for e in endpoints if str(e["key"]).startswith("tuned:")]

        assert len(tuned_keys()) == 1
        assert c.delete(f"/fine-tunes/{job_id}").status_code == 200
        deadline = time.monotonic() + 60
        while tuned_keys():
            assert time.monotonic() < deadline, tuned_keys()
            time.sleep(0.5)
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve(job_id)


def train_and_chat(client: openai.OpenAI) -> str:
    raw = "".join(json.dumps(r) + "\n" for r in weighted_rows()).encode()
    f = client.files.create(file=("xyx.jsonl", io.BytesIO(raw)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="dashtune-tiny",
        training_file=f.id,
        suffix="xyx",
        method={
            "type": "supervised",
            # 1000 x the base learning rate of full SFT (1e-5): the tiny model memorises.
            "supervised": {"hyperparameters": {"n_epochs": 6, "learning_rate_multiplier": 1000}},
        },
    )
    done = wait_ended(client, job.id)
    assert done.status == "succeeded", done
    assert done.fine_tuned_model == f"dashtune-tiny-xyx-{job.id}"
    assert done.trained_tokens and done.trained_tokens > 0
    assert done.finished_at and done.finished_at >= done.created_at

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].fine_tuned_model_checkpoint == done.fine_tuned_model
    assert checkpoints[0].step_number > 0 and checkpoints[0].metrics.train_loss is not None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert messages[0].startswith("Fine-tune succeeded")
    assert any(m.startswith("Job started") for m in messages)

    reply = client.chat.completions.create(
        model=done.fine_tuned_model,
        messages=[{"role": "user", "content": "hello"}],
        temperature=0,
        max_tokens=4,
    )
    assert reply.choices[0].message.content.startswith("xyx"), reply
    assert reply.model == done.fine_tuned_model
    return str(job.id)
