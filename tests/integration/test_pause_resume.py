"""Pause, resume and the retry of a lost worker, by the state table, over raw HTTP.

The control plane has no executor: the test plays the worker through the engine (claim,
heartbeat, finish, worker exit), as tests/integration/test_job_states.py does.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from dashtune.services import engine
from dashtune.services.runtime import Runtime
from dashtune.store import resume_points
from tests.conftest import Server
from tests.integration.helpers import assert_error, create_job
from tests.integration.test_job_states import claim, rt, tenant, to_running, wait_status

__all__ = ["rt", "tenant"]  # fixtures, used by name


def job_of(c: httpx.Client, job_id: str) -> dict:  # type: ignore[type-arg]
    return dict(c.get(f"/fine-tunes/{job_id}").json()["output"])


def fake_resume_point(job_dir: Path, step: int) -> Path:
    """What trainer/resume.py leaves on disk for a checkpoint: model + trainer state."""
    d = resume_points.checkpoints_dir(job_dir) / f"checkpoint-{step}"
    d.mkdir(parents=True)
    for name in ("model.safetensors", "trainer_state.json", "optimizer.pt", "rng_state.pth"):
        (d / name).write_bytes(b"x")
    return d


def test_pause_resume_cancel_delete_in_each_state(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    # QUEUING: pause is immediate (no worker to save anything).
    q = create_job(c, fid)["job_id"]
    wait_status(c, q, "QUEUING")
    assert_error(
        c.post(f"/fine-tunes/{q}/resume"), 400, "UnsupportedOperation", "cannot be resumed"
    )
    r = c.post(f"/fine-tunes/{q}/pause")
    assert r.status_code == 200 and r.json()["output"]["status"] == "PAUSED"
    paused = job_of(c, q)
    assert paused["allowed_actions"] == ["cancel", "resume"]
    assert_error(c.post(f"/fine-tunes/{q}/pause"), 400, "UnsupportedOperation", "cannot be paused")
    assert_error(c.delete(f"/fine-tunes/{q}"), 400, "UnsupportedOperation", "cancel it first")
    # PAUSED -> resume -> QUEUING -> RUNNING.
    assert c.post(f"/fine-tunes/{q}/resume").json()["output"]["status"] == "QUEUING"
    claim(rt, q)
    running = job_of(c, q)
    assert running["status"] == "RUNNING" and running["attempts"] == 1
    assert running["allowed_actions"] == ["cancel", "pause"]
    assert_error(c.post(f"/fine-tunes/{q}/resume"), 400, "UnsupportedOperation", "PAUSED")

    # RUNNING -> PAUSING (idempotent); the worker learns it from its heartbeat.
    assert c.post(f"/fine-tunes/{q}/pause").json()["output"]["status"] == "PAUSING"
    assert c.post(f"/fine-tunes/{q}/pause").json()["output"]["status"] == "PAUSING"
    assert engine.heartbeat(rt, q) == "PAUSING"
    assert_error(c.delete(f"/fine-tunes/{q}"), 400, "UnsupportedOperation", "PAUSING")
    assert_error(c.post(f"/fine-tunes/{q}/resume"), 400, "UnsupportedOperation")
    engine.finish(rt, q, engine.Outcome(usage=40, paused=True))
    done = job_of(c, q)
    assert done["status"] == "PAUSED" and done["usage"] == 40 and "end_time" not in done
    # A paused job counts against the quota like a running one and cancels at once.
    assert c.post(f"/fine-tunes/{q}/cancel").status_code == 200
    assert job_of(c, q)["status"] == "CANCELED"
    assert_error(c.post(f"/fine-tunes/{q}/pause"), 400, "UnsupportedOperation", "CANCELED")
    assert_error(c.post(f"/fine-tunes/{q}/resume"), 400, "UnsupportedOperation", "CANCELED")
    assert c.delete(f"/fine-tunes/{q}").status_code == 200

    # PAUSING, then canceled before the worker stopped: the cancel wins.
    p = create_job(c, fid)["job_id"]
    to_running(c, rt, p)
    c.post(f"/fine-tunes/{p}/pause")
    assert c.post(f"/fine-tunes/{p}/cancel").status_code == 200
    assert job_of(c, p)["status"] == "CANCELING"
    engine.finish(rt, p, engine.Outcome(usage=3, paused=True))
    assert job_of(c, p)["status"] == "CANCELED"

    # A worker killed while pausing leaves the job PAUSED at its newest resume point.
    k = create_job(c, fid)["job_id"]
    to_running(c, rt, k)
    c.post(f"/fine-tunes/{k}/pause")
    assert engine.worker_exited(rt, k, -9) == "PAUSED"
    assert job_of(c, k)["attempts"] == 1  # a pause is not a lost attempt
    c.post(f"/fine-tunes/{k}/cancel")
    assert_error(c.post("/fine-tunes/ft-missing/pause"), 404, "NotFound")
    assert_error(c.post("/fine-tunes/ft-missing/resume"), 404, "NotFound")

    # Ended jobs refuse both.
    s = create_job(c, fid)["job_id"]
    to_running(c, rt, s)
    engine.finish(rt, s, engine.Outcome(usage=5, final_path="/tmp/none"))
    assert_error(c.post(f"/fine-tunes/{s}/pause"), 400, "UnsupportedOperation", "SUCCEEDED")
    assert_error(c.post(f"/fine-tunes/{s}/resume"), 400, "UnsupportedOperation", "SUCCEEDED")
    # Another workspace cannot see the job at all.
    other = server.new_key("pause-stranger")
    with server.http(other) as o:
        assert_error(o.post(f"/fine-tunes/{s}/pause"), 404, "NotFound")


def test_lost_worker_is_retried_from_its_newest_resume_point(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    j = create_job(c, fid)["job_id"]
    to_running(c, rt, j)
    job_dir = server.data_dir / "jobs" / j
    for step in range(1, 7):
        engine.record_metrics(rt, j, step, {"loss": 1.0 / step})
    ckpt = fake_resume_point(job_dir, 4)
    engine.add_checkpoint(rt, j, "checkpoint-4", 4, str(ckpt), {"loss": 0.25})
    # Killed while writing checkpoint-6: the staging dir is never a resume point.
    staging = resume_points.checkpoints_dir(job_dir) / resume_points.STAGING / "checkpoint-6"
    staging.mkdir(parents=True)
    (staging / "trainer_state.json").write_text("{")

    assert engine.worker_exited(rt, j, -9) == "QUEUING"
    again = job_of(c, j)
    assert again["attempts"] == 2 and again["allowed_actions"] == ["cancel", "pause"]
    logs = c.get(f"/fine-tunes/{j}/logs", params={"line": 1000}).json()["output"]["logs"]
    assert (
        "Worker lost at step 6 (killed by signal 9); attempt 2 of 3 resumes from checkpoint-4."
        in logs
    )
    # The steps after the resume point will be trained again: recorded once, by attempt 2.
    steps = [m["step"] for m in c.get(f"/fine-tunes/{j}/metrics").json()["output"]["metrics"]]
    assert steps == [1, 2, 3, 4] and again["metrics"]["step"] == 4

    claim(rt, j)
    assert "(attempt 2 of 3)" in "\n".join(
        c.get(f"/fine-tunes/{j}/logs", params={"line": 1000}).json()["output"]["logs"]
    )
    assert engine.worker_exited(rt, j, None) == "QUEUING"
    assert job_of(c, j)["attempts"] == 3
    # Canceling between attempts cancels, and drops the (large) trainer state.
    assert c.post(f"/fine-tunes/{j}/cancel").status_code == 200
    assert job_of(c, j)["status"] == "CANCELED"
    assert (ckpt / "model.safetensors").exists() and not (ckpt / "optimizer.pt").exists()
    assert not resume_points.checkpoints_dir(job_dir).joinpath(resume_points.STAGING).exists()


def test_a_worker_lost_on_its_last_attempt_fails_the_job(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    c, fid = tenant
    j = create_job(c, fid)["job_id"]
    to_running(c, rt, j)
    assert engine.worker_exited(rt, j, -9) == "QUEUING"  # no resume point yet
    logs = c.get(f"/fine-tunes/{j}/logs", params={"line": 1000}).json()["output"]["logs"]
    assert any("attempt 2 of 3 starts again from the beginning" in line for line in logs)
    for attempt in (2, 3):
        claim(rt, j)
        assert job_of(c, j)["attempts"] == attempt
        status = engine.worker_exited(rt, j, -9)
    assert status == "FAILED"
    failed = job_of(c, j)
    assert failed["code"] == "WorkerLost" and "attempt 3 of 3" in failed["message"]
    assert "signal 9" in failed["message"]


def test_a_worker_given_up_on_changes_nothing_of_the_next_attempt(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    """Attempt 1's worker runs on after its node was declared lost (Ray leaves a dead
    raylet's processes running): its heartbeat says SUPERSEDED and its reports and its
    outcome are ignored, so attempt 2 alone writes the job."""
    c, fid = tenant
    j = create_job(c, fid)["job_id"]
    to_running(c, rt, j)
    engine.record_metrics(rt, j, 1, {"loss": 1.0}, attempt=1)
    assert engine.worker_exited(rt, j, None, why="Ray node n1 died under it") == "QUEUING"
    claim(rt, j)
    assert engine.heartbeat(rt, j, attempt=2) == "RUNNING"
    assert engine.heartbeat(rt, j, attempt=1) == engine.SUPERSEDED
    engine.record_metrics(rt, j, 2, {"loss": 9.0}, attempt=1)
    engine.record_progress(rt, j, 2, 10, 1.0, attempt=1)
    engine.add_checkpoint(rt, j, "checkpoint-2", 2, "/nowhere", {}, attempt=1)
    assert engine.finish(rt, j, engine.Outcome(code="TrainingFailed", attempt=1)) == "RUNNING"
    job = job_of(c, j)
    assert job["status"] == "RUNNING" and job["attempts"] == 2, job
    assert "step" not in (job.get("metrics") or {}), job  # no resume point: step 1 went too
    assert c.get(f"/fine-tunes/{j}/metrics").json()["output"]["metrics"] == []
    assert c.get(f"/fine-tunes/{j}/checkpoints").json()["output"] == []
    engine.record_metrics(rt, j, 2, {"loss": 0.5}, attempt=2)
    assert job_of(c, j)["metrics"]["step"] == 2
    assert engine.finish(rt, j, engine.Outcome(canceled=True, attempt=2)) == "FAILED"


def test_a_paused_job_counts_against_the_quota(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    """With a quota of N: one PAUSED job and N - 1 others fill it; canceling the paused
    one frees exactly one place."""
    c, fid = tenant
    quota = rt.settings.job_quota  # the server's: both read the same environment
    paused = create_job(c, fid)["job_id"]
    wait_status(c, paused, "QUEUING")
    assert c.post(f"/fine-tunes/{paused}/pause").json()["output"]["status"] == "PAUSED"
    for _ in range(quota - 1):
        create_job(c, fid)
    body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
    assert_error(c.post("/fine-tunes", json=body), 429, "Throttling", f"{quota} of your", "PAUSED")
    assert job_of(c, paused)["status"] == "PAUSED"
    assert c.post(f"/fine-tunes/{paused}/cancel").status_code == 200
    assert job_of(c, paused)["status"] == "CANCELED"
    create_job(c, fid)
    assert_error(c.post("/fine-tunes", json=body), 429, "Throttling")


def test_a_worker_lost_while_pausing_keeps_its_curve_up_to_the_resume_point(
    server: Server, rt: Runtime, tenant: tuple[httpx.Client, str]
) -> None:
    """Stopped by its executor after the grace (or killed) before it saved a resume point
    of its own: the job resumes from the newest one, and the steps after it, trained
    again, are recorded once, as after a lost attempt."""
    c, fid = tenant
    j = create_job(c, fid)["job_id"]
    to_running(c, rt, j)
    for step in range(1, 7):
        engine.record_metrics(rt, j, step, {"loss": 1.0 / step})
    ckpt = fake_resume_point(server.data_dir / "jobs" / j, 4)
    engine.add_checkpoint(rt, j, "checkpoint-4", 4, str(ckpt), {"loss": 0.25})
    assert c.post(f"/fine-tunes/{j}/pause").json()["output"]["status"] == "PAUSING"
    assert engine.worker_exited(rt, j, -15) == "PAUSED"
    paused = job_of(c, j)
    assert paused["attempts"] == 1 and paused["metrics"]["step"] == 4, paused
    logs = c.get(f"/fine-tunes/{j}/logs", params={"line": 1000}).json()["output"]["logs"]
    assert "Worker stopped (killed by signal 15) while pausing; resumes from checkpoint-4." in logs
    steps = [m["step"] for m in c.get(f"/fine-tunes/{j}/metrics").json()["output"]["metrics"]]
    assert steps == [1, 2, 3, 4]
    assert c.post(f"/fine-tunes/{j}/resume").json()["output"]["status"] == "QUEUING"
    claim(rt, j)
    engine.record_metrics(rt, j, 5, {"loss": 0.2})
    steps = [m["step"] for m in c.get(f"/fine-tunes/{j}/metrics").json()["output"]["metrics"]]
    assert steps == [1, 2, 3, 4, 5]
