"""Progress a user reads while a job trains: the trainer's own step total, and each metric
value with the step it belongs to (job object, SSE frames), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dashtune.services import engine
from tests.conftest import Server
from tests.integration.helpers import create_job, sft_rows, upload, write_jsonl
from tests.integration.test_job_states import wait_status


def _stream_frames(server: Server, key: str, job_id: str, query: str = "") -> list[dict[str, Any]]:
    frames = []
    with (
        server.http(key) as c,
        c.stream("GET", f"/fine-tunes/{job_id}/stream{query}", timeout=60) as r,
    ):
        for line in r.iter_lines():
            if line.startswith("data:"):
                frames.append(json.loads(line[5:]))
    return frames


def test_steps_and_metrics_say_which_step_they_are(server: Server, tmp_path: Path) -> None:
    key = server.new_key("stepper")
    with server.http(key) as c:
        job = create_job(c, upload(c, write_jsonl(tmp_path / "s.jsonl", sft_rows(3))))
        job_id = job["job_id"]
        wait_status(c, job_id, "QUEUING")
        rt = server.runtime()
        try:
            assert engine.claim_next(rt, "test-host") is not None
            # What the trainer reports: eval at 0, train logs at 10 and 20, a last eval at 24.
            engine.record_progress(rt, job_id, 0, 24, None)
            engine.record_metrics(rt, job_id, 0, {"eval_loss": 3.0})
            engine.record_metrics(rt, job_id, 10, {"loss": 2.0, "epoch": 1.0})
            engine.record_progress(rt, job_id, 10, 24, 5.0)
            engine.record_metrics(rt, job_id, 20, {"loss": 1.0, "epoch": 2.0})
            engine.record_progress(rt, job_id, 20, 24, 1.0)
            engine.record_metrics(rt, job_id, 24, {"eval_loss": 1.5})
            got = c.get(f"/fine-tunes/{job_id}").json()["output"]
            assert got["total_steps"] == 24
            assert got["metrics"] == {
                "loss": 1.0,
                "epoch": 2.0,
                "step": 20,
                "eval_loss": 1.5,
                "eval_step": 24,
            }
            final = tmp_path / "final"
            final.mkdir()
            engine.finish(rt, job_id, engine.Outcome(usage=10, final_path=str(final)))
        finally:
            rt.close()
        cps = c.get(f"/fine-tunes/{job_id}/checkpoints").json()["output"]
        assert [(cp["step"], cp["metrics"]["step"], cp["metrics"]["eval_step"]) for cp in cps] == [
            (24, 20, 24)
        ]

    # A stream starts at the end: the newest point only; `?offset=0` asks for the history.
    frames = [f for f in _stream_frames(server, key, job_id) if f["type"] == "metrics"]
    assert [(f["step"], f.get("loss"), f.get("eval_loss")) for f in frames] == [(24, None, 1.5)]
    frames = [f for f in _stream_frames(server, key, job_id, "?offset=0") if f["type"] == "metrics"]
    assert [(f["step"], f.get("loss"), f.get("eval_loss")) for f in frames] == [
        (0, None, 3.0),
        (10, 2.0, None),
        (20, 1.0, None),
        (24, None, 1.5),
    ]
    assert all(f["total_steps"] == 24 for f in frames)
