"""num_workers=2: one job trained data-parallel (torchrun, gloo on CPU) by the local executor.

Parity: at the same global batch (1 x 8 vs 2 x 4) the two runs see the same samples per
step with the same weights until the first real update (step 1 has lr 0: warmup), so
their first two losses agree to float noise (measured 5e-7): a wrong global batch or a
wrong shard would show there at once (a batch of other samples moves the loss by 0.05
and more). After that the gradients differ in the last bits (two partial sums
all-reduced vs one sum) and AdamW turns such differences in near-zero-gradient
coordinates into steps of about the learning rate, so the curves drift apart in
proportion to the rate: measured here max 0.094 at lr 1e-3 over 16 steps while the loss
fell by 0.95 (0.029 at lr 1e-4; the feasibility notes: 1.3e-3 at the default 1e-5, with
the same stack). Samples of one length rule out per-rank token weighting as a cause.
Hence: the first two steps within 1e-4, every step within 0.15, and the run must learn.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import (
    freeze_worker,
    rows_for,
    thaw,
    upload_rows,
    wait_for,
    wait_terminal,
    worker_pid,
)

pytestmark = pytest.mark.e2e

PARITY = {"n_epochs": 2, "batch_size": 8, "max_length": 64, "logging_steps": 1, "seed": 7}
PARITY |= {"learning_rate": 1e-3, "eval_steps": 1000, "save_strategy": "epoch"}


@pytest.fixture(scope="module")
def dp_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    srv = start_server(
        tmp_path_factory.mktemp("dp"),
        "",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_MAX_CONCURRENT_JOBS="2",
        DASHTUNE_HEARTBEAT_INTERVAL="1",
        DASHTUNE_CANCEL_GRACE_SECONDS="10",
        DASHTUNE_SERVING="false",
    )
    yield srv
    stop_server(srv)


def same_length_rows(n: int) -> list[dict[str, Any]]:
    """SFT rows whose samples all have the same number of tokens (see the module doc)."""
    rng = random.Random(3)
    rows = []
    for _ in range(n):
        w = "".join(rng.choice("abcdefghij") for _ in range(4))
        msgs = [
            {"role": "user", "content": f"reverse {w}"},
            {"role": "assistant", "content": w[::-1]},
        ]
        rows.append({"messages": msgs})
    return rows


def losses(c: Any, job_id: str) -> dict[int, float]:
    points = c.get(f"/fine-tunes/{job_id}/metrics").json()["output"]["metrics"]
    return {p["step"]: p["loss"] for p in points if "loss" in p}


def test_two_workers_match_one_at_the_same_global_batch(dp_server: Server, tmp_path: Path) -> None:
    with dp_server.http() as c:
        fid = upload_rows(c, tmp_path, "t.jsonl", same_length_rows(80))
        ids = []
        for n in (1, 2):
            body = {
                "model": "dashtune-tiny",
                "training_file_ids": [fid],
                "hyper_parameters": {**PARITY, "num_workers": n},
            }
            ids.append(c.post("/fine-tunes", json=body).json()["output"]["job_id"])
        one, two = (wait_terminal(c, j, timeout=400) for j in ids)
        assert one["status"] == two["status"] == "SUCCEEDED", (one, two)
        assert two["placement"]["num_workers"] == 2
        a, b = losses(c, one["job_id"]), losses(c, two["job_id"])
        assert a.keys() == b.keys() and len(a) >= 10, (a, b)
        diffs = [abs(a[s] - b[s]) for s in a]
        print(f"max |loss delta| {max(diffs):.2e}, mean {sum(diffs) / len(diffs):.2e}, loss {a}")
        assert max(diffs[:2]) < 1e-4, diffs
        assert max(diffs) < 0.15, diffs
        assert a[max(a)] < a[min(a)] - 0.5  # it learned: the check is not of two flat lines
        lines = c.get(f"/fine-tunes/{two['job_id']}/logs", params={"line": 1000}).json()
        text = "\n".join(lines["output"]["logs"])
        assert "worker 0 of 2 started" in text and "worker 1 of 2 started" in text
        assert text.count("final model saved") == 1  # rank 0 alone reports and saves
        ckpts = c.get(f"/fine-tunes/{two['job_id']}/checkpoints").json()["output"]
        assert ckpts, ckpts
    final = dp_server.data_dir / "jobs" / two["job_id"] / "final"
    generate(final)
    saved = list((dp_server.data_dir / "jobs" / two["job_id"] / "checkpoints").glob("checkpoint-*"))
    assert saved
    for ck in saved:
        generate(ck)


def generate(path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    ids = tok("reverse abc", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]


def test_cancel_stops_every_rank_at_the_same_step(dp_server: Server, tmp_path: Path) -> None:
    with dp_server.http() as c:
        fid = upload_rows(c, tmp_path, "long.jsonl", rows_for("sft", 256))
        body = {
            "model": "dashtune-tiny",
            "training_file_ids": [fid],
            "hyper_parameters": {"n_epochs": 50, "max_length": 64, "num_workers": 2},
        }
        job_id = c.post("/fine-tunes", json=body).json()["output"]["job_id"]
        wait_for(c, job_id, lambda j: j["status"] == "RUNNING" and j["progress"] > 0, 180)
        c.post(f"/fine-tunes/{job_id}/cancel")
        done = wait_terminal(c, job_id, timeout=60)
        assert done["status"] == "CANCELED", done
        lines = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
        ended = sorted(ln for ln in lines if " ended at step " in ln)
        assert len(ended) == 2, ended
        steps = {ln.split(" ended at step ")[1] for ln in ended}
        assert len(steps) == 1, ended  # both ranks stopped at the same step, cleanly
    log = (dp_server.data_dir / "jobs" / job_id / "worker.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def test_pause_and_resume_with_two_workers(dp_server: Server, tmp_path: Path) -> None:
    """Both ranks take the pause at the same step (the decision is all-reduced, as a
    cancel's is: a rank pausing alone would hang the other in a collective), save one
    resume point, and the resumed run continues the uninterrupted one's curve."""
    hp = {**PARITY, "n_epochs": 4, "num_workers": 2}  # 36 steps: time for a pause to land
    with dp_server.http() as c:
        fid = upload_rows(c, tmp_path, "t.jsonl", same_length_rows(80))
        body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp}
        job_id, ref_id = (c.post("/fine-tunes", json=body).json()["output"]["job_id"] for _ in "ab")
        wait_for(c, job_id, lambda j: j["status"] == "RUNNING" and (j["metrics"] or {}).get("step"))
        # Held still until the pause is handed over: on an idle machine 36 tiny steps can
        # end before a pause request reaches the ranks.
        pid = worker_pid(dp_server, job_id)
        assert pid is not None
        frozen = freeze_worker(dp_server, pid, tree=True)
        try:
            r = c.post(f"/fine-tunes/{job_id}/pause")
            assert r.status_code == 200, r.text
            pause_file = dp_server.data_dir / "jobs" / job_id / "PAUSE"
            deadline = time.monotonic() + 30
            while not pause_file.exists():
                assert time.monotonic() < deadline, "no pause file written"
                time.sleep(0.05)
        finally:
            thaw(frozen)
        paused = wait_for(c, job_id, lambda j: j["status"] == "PAUSED", timeout=120)
        total = wait_terminal(c, ref_id, timeout=400)
        assert total["status"] == "SUCCEEDED", total
        step = paused["metrics"]["step"]
        lines = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
        ended = [ln for ln in lines if " ended at step " in ln]
        assert sorted(ln.split(" ended at step ")[1] for ln in ended) == [str(step)] * 2, ended
        assert 0 < step < max(losses(c, ref_id)), (step, ended)  # paused mid-run
        assert c.post(f"/fine-tunes/{job_id}/resume").status_code == 200
        done = wait_terminal(c, job_id, timeout=400)
        assert done["status"] == "SUCCEEDED" and done["attempts"] == 1, done
        text = "\n".join(
            c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
        )
        assert f"resuming from checkpoint-{step}" in text, text
        got, want = losses(c, job_id), losses(c, ref_id)
        assert got.keys() == want.keys(), (got, want)  # each step once, none lost
        diffs = {s: abs(got[s] - want[s]) for s in want}
        print(f"paused at step {step}; max |loss delta| after it {max(diffs.values()):.2e}")
        assert all(diffs[s] == 0.0 for s in want if s <= step), diffs  # the pause changed nothing
        # Unlike one process (test_resume.py: equal within 1e-6), a resumed data-parallel
        # run is not bit-identical from its first resumed step (measured up to 0.078 over
        # the steps after a pause): hence the parity bound of this module, not equality.
        assert max(diffs.values()) < 0.15, diffs
    log = (dp_server.data_dir / "jobs" / job_id / "worker.log").read_text()
    assert "Traceback" not in log, log[-3000:]
