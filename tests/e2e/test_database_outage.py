"""Training through a PostgreSQL outage: the worker waits for the database, then goes on.

The server and its worker reach PostgreSQL through `tests.relay.CuttableRelay`; the
test cuts it for a few seconds while a job trains (logging every step, so the worker's
reports meet the outage) and restores it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.e2e.conftest import rows_for, upload_rows, wait_for, wait_terminal
from tests.relay import relayed_server

OUTAGE_SECONDS = 4


def test_a_short_outage_pauses_training_instead_of_failing_it(
    tmp_path: Path, database_factory: Any
) -> None:
    env = {
        "DASHTUNE_EXECUTOR": "local",
        "DASHTUNE_SERVING": "false",
        "DASHTUNE_HEARTBEAT_INTERVAL": "1",
        "DASHTUNE_MAX_ATTEMPTS": "1",  # a retried attempt would hide a failed one
    }
    with relayed_server(tmp_path, database_factory, **env) as (srv, relay), srv.http() as c:
        fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 128))
        hp = {"n_epochs": 12, "max_length": 64, "logging_steps": 1, "batch_size": 8}
        body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp}
        job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
        job = wait_for(c, job_id, lambda j: j["status"] == "RUNNING" and j["progress"] > 0)
        relay.cut()
        time.sleep(OUTAGE_SECONDS)
        relay.restore()
        done = wait_terminal(c, job_id)
        logs = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()
        text = "\n".join(logs["output"]["logs"])
        assert done["status"] == "SUCCEEDED", (done, text)
        assert done["attempts"] == 1 and done["progress"] == 1.0
        assert job["progress"] < 1.0  # the outage came while it trained
        # Every step's loss was recorded, those logged during the outage included.
        metrics = c.get(f"/fine-tunes/{job_id}/metrics").json()["output"]
        steps = [m["step"] for m in metrics["metrics"] if "loss" in m]
        assert steps == list(range(1, done["total_steps"] + 1)), steps
