"""The estimate against the trainer: its token count is what the job then trains, and a
job of the model gives the next estimate a measured duration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.e2e.conftest import rows_for, upload_rows, wait_terminal

pytestmark = pytest.mark.e2e


def test_estimated_tokens_are_the_tokens_trained(train_server: Server, tmp_path: Path) -> None:
    with train_server.http() as c:
        c.timeout = httpx.Timeout(300)  # the first estimate may build the tiny model
        fid = upload_rows(c, tmp_path, "est.jsonl", rows_for("sft", 40, seed=3))
        body: dict[str, Any] = {
            "model": "dashtune-tiny",
            "training_file_ids": [fid],
            "hyper_parameters": {"n_epochs": 2, "batch_size": 4, "max_length": 64},
        }
        before = c.post("/fine-tunes/estimate", json=body).json()["output"]
        assert before["valid"] and before["tokens_exact"] and before["packing"] is True, before
        r = c.post("/fine-tunes", json=body)
        assert r.status_code == 200, r.text
        job = wait_terminal(c, r.json()["output"]["job_id"])
        assert job["status"] == "SUCCEEDED", job
        # Packed (the default) or not, each epoch trains every kept sample once, no padding.
        assert job["usage"] == before["total_tokens"] == 2 * before["train_tokens_per_epoch"]
        assert job["total_steps"] == before["total_steps"]  # the trainer's max_steps

        after = c.post("/fine-tunes/estimate", json=body).json()["output"]
        assert after["duration"]["seconds"] > 0, after["duration"]
        assert job["job_id"] in after["duration"]["jobs"]
