"""Crash-safe training on the real server and the tiny model: a job whose worker is
SIGKILLed, that is paused, or whose server stops, resumes as the same run.

"The same run" is checked against an uninterrupted job with the same data, seed and
hyper-parameters (CPU, fp32, one thread): the training loss of every step, the step
count, the final eval loss and `usage` must be equal. Resuming restores the optimizer,
scheduler, RNG states and data position exactly, so the tolerance is 1e-6 relative (in
practice the values are bit-identical). With logging_steps=1 every step is compared; a
logged loss is the mean over its logging window, so with a window that straddles a
resume point only that first window would differ (docs/api.md).
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashtune.store import resume_points
from tests.conftest import BACKENDS, Server, start_server, stop_server
from tests.e2e.conftest import (
    E2E_BACKEND,
    freeze_worker,
    rows_for,
    start_long_job,
    start_train_server,
    upload_rows,
    wait_for,
    wait_gone,
    wait_terminal,
)

pytestmark = pytest.mark.e2e

# 72 rows, 8 held out: 64 training samples, 4 a batch, 3 epochs = 48 steps (24 with GA 2).
BASE: dict[str, Any] = {
    "n_epochs": 3,
    "batch_size": 4,
    "max_length": 64,
    "max_split_val_dataset_sample": 8,
    "logging_steps": 1,
    "eval_steps": 10,
    "save_strategy": "steps",
    "save_steps": 6,
    "save_total_limit": 2,
    "lr_scheduler_type": "cosine",  # the schedule must resume at the right point too
    "warmup_ratio": 0.1,
}
CASES: dict[str, dict[str, Any]] = {
    "sft": {"training_type": "sft", "learning_rate": 3e-3},
    "efficient_sft-ga2": {
        "training_type": "efficient_sft",
        "learning_rate": 5e-3,
        "lora_dropout": 0.1,  # dropout draws random numbers: the RNG state must resume too
        "gradient_accumulation_steps": 2,
    },
    "dpo_lora-ga2": {
        "training_type": "dpo_lora",
        "learning_rate": 5e-3,
        "gradient_accumulation_steps": 2,
    },
}
REL = 1e-6

# The other backend too, when it is tested (DASHTUNE_TEST_BACKENDS): the core cases only,
# on a server of their own, compared with the references of `train_server` (a run's losses
# do not depend on where its metrics are stored).
OTHER = "postgres" if E2E_BACKEND == "sqlite" else "sqlite"
ALSO = [OTHER] if OTHER in BACKENDS else []


def submit(c: httpx.Client, tmp: Path, case: str) -> str:
    hp = dict(CASES[case])
    training_type = hp.pop("training_type")
    fid = upload_rows(c, tmp, f"{case}.jsonl", rows_for(training_type, 72))
    body = {
        "model": "dashtune-tiny",
        "training_type": training_type,
        "training_file_ids": [fid],
        "hyper_parameters": {**BASE, **hp},
    }
    r = c.post("/fine-tunes", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["job_id"])


def curve(c: httpx.Client, job_id: str) -> dict[str, Any]:
    """What must not change across a resume: per-step losses, steps, eval loss, usage."""
    job = c.get(f"/fine-tunes/{job_id}").json()["output"]
    rows = c.get(f"/fine-tunes/{job_id}/metrics").json()["output"]["metrics"]
    losses = [(m["step"], m["loss"]) for m in rows if "loss" in m]
    evals = [(m["step"], m["eval_loss"]) for m in rows if "eval_loss" in m]
    return {"status": job["status"], "usage": job["usage"], "loss": losses, "eval": evals}


def assert_same_run(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got["status"] == want["status"] == "SUCCEEDED"
    assert [s for s, _ in got["loss"]] == [s for s, _ in want["loss"]]  # each step once
    for (step, a), (_, b) in zip(got["loss"], want["loss"], strict=True):
        assert abs(a - b) <= REL * abs(b), f"step {step}: loss {a} != {b}"
    assert [s for s, _ in got["eval"]] == [s for s, _ in want["eval"]]
    for (step, a), (_, b) in zip(got["eval"], want["eval"], strict=True):
        assert abs(a - b) <= REL * abs(b), f"eval at step {step}: {a} != {b}"
    assert got["usage"] == want["usage"]


@pytest.fixture(scope="module")
def references(
    train_server: Server, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Any]]:
    """Each case run once without interruption."""
    tmp = tmp_path_factory.mktemp("reference")
    with train_server.http() as c:
        ids = {case: submit(c, tmp, case) for case in CASES}
        for job_id in ids.values():
            wait_terminal(c, job_id, timeout=600)
        return {case: curve(c, job_id) for case, job_id in ids.items()}


@pytest.fixture(scope="module")
def other_server(tmp_path_factory: pytest.TempPathFactory, database_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """The same training server on the other backend (PostgreSQL, unless the e2e suite
    runs on it already)."""
    data_dir = tmp_path_factory.mktemp(f"resume-{OTHER}")
    srv = start_train_server(data_dir, database_factory(OTHER, data_dir))
    yield srv
    stop_server(srv)


def server_for(request: pytest.FixtureRequest, backend: str) -> Server:
    name = "train_server" if backend == E2E_BACKEND else "other_server"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


class Watch:
    """Fast reads of a job's row, straight from the server's database."""

    def __init__(self, server: Server, job_id: str) -> None:
        self.server, self.job_id = server, job_id
        self.rt = server.runtime()
        self.job_dir = server.data_dir / "jobs" / job_id

    def row(self) -> Any:
        from dashtune.store.tables import Job

        with self.rt.db.read() as s:
            return s.get(Job, self.job_id)

    def until(self, pred: Callable[[Any], bool], timeout: float = 300, every: float = 0.02) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            job = self.row()
            if pred(job):
                return job
            assert job.status not in ("SUCCEEDED", "FAILED", "CANCELED"), (
                f"{self.job_id} ended {job.status} {job.code} {job.message}"
            )
            assert time.monotonic() < deadline, f"{self.job_id} still {job.status}"
            time.sleep(every)

    def step(self, job: Any) -> int:
        return int((job.metrics or {}).get("step", 0))

    def kill_at_step(self, at_least: int) -> tuple[int, int]:
        """SIGKILL the worker once the job logged step `at_least`; (step, pid)."""
        job = self.until(
            lambda j: j.status == "RUNNING" and j.worker_pid and self.step(j) >= at_least
        )
        os.kill(job.worker_pid, signal.SIGKILL)
        return self.step(job), job.worker_pid

    def freeze(self, pid: int, timeout: float = 30) -> None:
        """SIGSTOP the worker outside any database transaction (see `freeze_worker`)."""
        freeze_worker(self.server, pid, timeout)

    def wait_pause_file(self, timeout: float = 30) -> None:
        """Until the job's pause file exists: a pause has been handed to its worker."""
        deadline = time.monotonic() + timeout
        while not (self.job_dir / "PAUSE").exists():
            assert time.monotonic() < deadline, "no pause file written"
            time.sleep(0.05)

    def kill_in_checkpoint_write(self, timeout: float = 300) -> tuple[int, int]:
        """SIGKILL the worker while it writes a checkpoint; (its step, pid).

        A tiny model's checkpoint takes milliseconds, too short to catch by polling on a
        busy machine; so the worker is frozen (SIGSTOP) at random moments, and killed if it
        froze with a checkpoint half-written in the staging dir, else let go (SIGCONT)."""
        import psutil

        staging = resume_points.checkpoints_dir(self.job_dir) / resume_points.STAGING
        job = self.until(lambda j: j.status == "RUNNING" and j.worker_pid and self.step(j) >= 1)
        pid, proc = job.worker_pid, psutil.Process(job.worker_pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, signal.SIGSTOP)
            while proc.status() != psutil.STATUS_STOPPED:
                time.sleep(0.0005)
            staged = [d.name for d in staging.glob("checkpoint-*")] if staging.is_dir() else []
            if staged:
                os.kill(pid, signal.SIGKILL)
                return int(staged[0].rsplit("-", 1)[1]), pid
            os.kill(pid, signal.SIGCONT)
            time.sleep(random.uniform(0, 0.005))
        raise AssertionError("no checkpoint write caught")

    def close(self) -> None:
        self.rt.close()


def logs(c: httpx.Client, job_id: str) -> str:
    return "\n".join(
        c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
    )


@pytest.mark.parametrize(
    ("case", "backend"),
    [(case, E2E_BACKEND) for case in CASES] + [("sft", b) for b in ALSO],
)
def test_killed_worker_resumes_as_the_same_run(
    request: pytest.FixtureRequest,
    references: dict[str, dict[str, Any]],
    tmp_path: Path,
    case: str,
    backend: str,
) -> None:
    train_server = server_for(request, backend)
    total = references[case]["loss"][-1][0]
    target = random.randint(BASE["save_steps"] + 1, total - 6)
    with train_server.http() as c:
        job_id = submit(c, tmp_path, case)
        w = Watch(train_server, job_id)
        try:
            step, pid = w.kill_at_step(target)
            wait_gone(pid)
            done = wait_terminal(c, job_id, timeout=600)
        finally:
            w.close()
        text = logs(c, job_id)
        assert done["attempts"] == 2, text
        found = re.search(
            r"\(killed by signal 9\); attempt 2 of 6 resumes from checkpoint-(\d+)", text
        )
        assert found, text
        resumed = int(found.group(1))  # the newest save_steps checkpoint before the kill
        assert resumed % BASE["save_steps"] == 0 and BASE["save_steps"] <= resumed <= step + 1
        assert f"resuming from checkpoint-{resumed}" in text
        assert_same_run(curve(c, job_id), references[case])
        # The job ended: model checkpoints stay, their trainer state is gone.
        kept = list(resume_points.checkpoints_dir(w.job_dir).glob("checkpoint-*"))
        assert kept and not any(resume_points.is_resume_point(d) for d in kept)
        assert len(c.get(f"/fine-tunes/{job_id}/checkpoints").json()["output"]) <= 3


def test_five_kills_then_success_never_from_a_half_written_checkpoint(
    train_server: Server, references: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    """DASHTUNE_MAX_ATTEMPTS=6 on this server: 5 lost attempts, the 6th succeeds."""
    total = references["sft"]["loss"][-1][0]
    rng = random.Random()
    with train_server.http() as c:
        job_id = submit(c, tmp_path, "sft")
        w = Watch(train_server, job_id)
        try:
            for attempt in range(1, 6):
                job = w.until(lambda j, a=attempt: j.status == "RUNNING" and j.attempts == a)
                kind = ["startup", "step", "checkpoint"][attempt % 3]
                if kind == "checkpoint":
                    half_written, pid = w.kill_in_checkpoint_write()
                elif kind == "startup":  # before its first step: while loading, or resuming
                    job = w.until(lambda j: j.worker_pid is not None)
                    pid = job.worker_pid
                    time.sleep(rng.uniform(0, 2))
                    os.kill(pid, signal.SIGKILL)
                else:
                    _, pid = w.kill_at_step(min(total - 6, w.step(job) + rng.randint(1, 12)))
                wait_gone(pid)
                if kind == "checkpoint":  # the next attempt resumes from an older one
                    w.until(lambda j, a=attempt: j.attempts == a + 1)
                    lost = [x for x in logs(c, job_id).splitlines() if x.startswith("Worker lost")]
                    older = re.search(r"resumes from checkpoint-(\d+)", lost[-1])
                    if older is None:
                        assert "from the beginning" in lost[-1], lost[-1]
                    else:
                        assert int(older.group(1)) < half_written, (lost[-1], half_written)
            done = wait_terminal(c, job_id, timeout=600)
        finally:
            w.close()
        text = logs(c, job_id)
        assert done["status"] == "SUCCEEDED", text
        assert done["attempts"] == 6 and text.count("(killed by signal 9); attempt") == 5
        assert_same_run(curve(c, job_id), references["sft"])


@pytest.mark.parametrize("backend", [E2E_BACKEND, *ALSO])
def test_pause_frees_the_slot_and_resume_continues_the_same_run(
    request: pytest.FixtureRequest,
    references: dict[str, dict[str, Any]],
    tmp_path: Path,
    backend: str,
) -> None:
    train_server = server_for(request, backend)
    with train_server.http() as c:
        blocker = start_long_job(c, tmp_path)  # holds one of the server's two slots
        job_id = submit(c, tmp_path, "sft")
        w = Watch(train_server, job_id)
        try:
            fid = upload_rows(c, tmp_path, "small.jsonl", rows_for("sft", 16))
            job = w.until(lambda j: j.status == "RUNNING" and w.step(j) >= 10)
            # The worker is frozen until the server has asked it to pause: on a fast
            # machine the tiny job would otherwise finish its last 14 steps before the
            # pause reaches it (as it did once in CI), and the test would race it.
            assert job.worker_pid is not None
            w.freeze(job.worker_pid)
            try:
                small = c.post(
                    "/fine-tunes",
                    json={
                        "model": "dashtune-tiny",
                        "training_file_ids": [fid],
                        "hyper_parameters": {"max_length": 64},
                    },
                ).json()["output"]["job_id"]
                # Validated, then no slot for it (bounded well inside the 30 s heartbeat
                # timeout that a frozen worker must not reach).
                wait_for(c, small, lambda j: j["status"] != "PENDING", timeout=15)
                time.sleep(0.5)  # a scheduler tick at least
                assert c.get(f"/fine-tunes/{small}").json()["output"]["status"] == "QUEUING"
                r = c.post(f"/fine-tunes/{job_id}/pause")
                assert r.status_code == 200 and r.json()["output"]["status"] == "PAUSING"
                w.wait_pause_file()  # the server's scheduler tells the worker so
            finally:
                os.kill(job.worker_pid, signal.SIGCONT)
            paused = wait_for(c, job_id, lambda j: j["status"] == "PAUSED", timeout=120)
            assert paused["allowed_actions"] == ["cancel", "resume"]
            wait_gone(job.worker_pid)
            # The slot is free: the queued job starts while this one is paused.
            wait_for(c, small, lambda j: j["status"] in ("RUNNING", "SUCCEEDED"), timeout=120)
            assert resume_points.newest(w.job_dir) is not None
            r = c.delete(f"/fine-tunes/{job_id}")
            assert r.status_code == 400 and "cancel it first" in r.json()["message"]
            assert c.post(f"/fine-tunes/{job_id}/resume").json()["output"]["status"] == "QUEUING"
            c.post(f"/fine-tunes/{blocker}/cancel")
            done = wait_terminal(c, job_id, timeout=600)
        finally:
            w.close()
        text = logs(c, job_id)
        assert "Job paused after step" in text and "resuming from checkpoint-" in text
        assert done["attempts"] == 1  # a pause is not a lost attempt
        assert_same_run(curve(c, job_id), references["sft"])
        wait_terminal(c, small, timeout=300)


def test_server_sigterm_pauses_and_sigkill_retries(
    tmp_path: Path, references: dict[str, dict[str, Any]]
) -> None:
    """SIGTERM: the running job is PAUSED and resumes on the next start. Then the machine
    "crashes" (server and worker SIGKILLed): the next start retries it; it SUCCEEDS."""
    data = tmp_path / "data"
    env = {
        "DASHTUNE_EXECUTOR": "local",
        "DASHTUNE_HEARTBEAT_INTERVAL": "1",
        "DASHTUNE_CANCEL_GRACE_SECONDS": "20",
        "DASHTUNE_SERVING": "false",
    }
    srv = start_server(data, "", **env)
    key = srv.key
    try:
        with srv.http() as c:
            job_id = submit(c, tmp_path, "sft")
        w = Watch(srv, job_id)
        job = w.until(lambda j: j.status == "RUNNING" and w.step(j) >= 10)
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=60)  # uvicorn re-raises SIGTERM after its graceful shutdown
        paused = w.row()
        assert paused.status == "PAUSED" and paused.paused_by == "shutdown", paused.status
        assert resume_points.newest(w.job_dir) is not None
        wait_gone(job.worker_pid)
        w.close()
    finally:
        stop_server(srv)

    again = start_server(data, "", **env)
    try:
        w = Watch(again, job_id)
        job = w.until(lambda j: j.status == "RUNNING" and w.step(j) > paused.metrics["step"] + 4)
        assert job.attempts == 1
        os.kill(again.proc.pid, signal.SIGKILL)
        again.proc.wait()
        os.kill(job.worker_pid, signal.SIGKILL)
        wait_gone(job.worker_pid)
        w.close()
    finally:
        stop_server(again)

    third = start_server(data, "", **env)
    try:
        with third.http(key) as c:
            done = wait_terminal(c, job_id, timeout=600)
            text = logs(c, job_id)
            assert done["status"] == "SUCCEEDED" and done["attempts"] == 2, text
            assert "started again; job queued to resume" in text
            assert "(its process is gone); attempt 2 of 3 resumes from checkpoint-" in text
            assert_same_run(curve(c, job_id), references["sft"])
    finally:
        stop_server(third)


def test_standalone_scheduler_sigterm_pauses_and_its_next_start_resumes(
    tmp_path: Path, references: dict[str, dict[str, Any]]
) -> None:
    """The graceful shutdown of `dashtune scheduler` run alone (an API with no scheduler
    beside it): SIGTERM pauses its running job at a resume point, the worker exits, and
    the next start of a scheduler on this host queues it again; it ends as the same run."""
    import subprocess

    from tests.conftest import BIN

    data = tmp_path / "data"
    api = start_server(
        data,
        "",
        DASHTUNE_SCHEDULER="false",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_SERVING="false",
        DASHTUNE_HEARTBEAT_INTERVAL="1",
        DASHTUNE_CANCEL_GRACE_SECONDS="20",
    )

    def scheduler(name: str) -> subprocess.Popen[bytes]:
        log = data / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(BIN / "dashtune"), "scheduler"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=api.env,
            )
        deadline = time.monotonic() + 60
        while "Scheduler " not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        return proc

    first = scheduler("scheduler-1")
    second: subprocess.Popen[bytes] | None = None
    try:
        with api.http() as c:
            job_id = submit(c, tmp_path, "sft")
            w = Watch(api, job_id)
            try:
                job = w.until(lambda j: j.status == "RUNNING" and w.step(j) >= 3)
                w.freeze(job.worker_pid)  # so the job cannot end before the pause lands
                try:
                    first.send_signal(signal.SIGTERM)
                    w.wait_pause_file()
                finally:
                    os.kill(job.worker_pid, signal.SIGCONT)
                assert first.wait(timeout=60) == 0, (data / "scheduler-1.log").read_text()
                paused = w.row()
                assert paused.status == "PAUSED" and paused.paused_by == "shutdown"
                assert resume_points.newest(w.job_dir) is not None
                wait_gone(job.worker_pid)
            finally:
                w.close()
            second = scheduler("scheduler-2")
            done = wait_terminal(c, job_id, timeout=600)
            text = logs(c, job_id)
            assert done["status"] == "SUCCEEDED" and done["attempts"] == 1, text
            assert "started again; job queued to resume" in text, text
            assert "resuming from checkpoint-" in text, text
            assert_same_run(curve(c, job_id), references["sft"])
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=60)
        stop_server(api)
