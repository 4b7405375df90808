"""Jobs on a 2-node Ray cluster through two API replicas on PostgreSQL.

Order matters: `test_node_death_fails_its_job_naming_the_node` kills `node_c`; the last
test adds `node_d` and kills the node its job runs on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job
from tests.cluster.conftest import (
    Replicas,
    logs,
    ray_env,
    start_scheduler,
    stop_scheduler,
    wait_nodes,
    wait_pid_gone,
    worker_pids,
)
from tests.cluster.raycluster import RayCluster
from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import rows_for, upload_rows, wait_for, wait_terminal

pytestmark = pytest.mark.cluster

SHORT = {"max_length": 64, "n_epochs": 1, "batch_size": 4}


def create(c: httpx.Client, fid: str, **hyper: object) -> str:
    body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hyper}
    r = c.post("/fine-tunes", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["job_id"])


def running_with_progress(c: httpx.Client, job_id: str) -> dict[str, object]:
    """RUNNING, trained a step, and placed (the scheduler's poll records the node apart
    from the worker's progress, so either may come first)."""
    return wait_for(
        c,
        job_id,
        lambda j: j["status"] == "RUNNING" and j["progress"] > 0 and j["placement"]["nodes"],
        180,
    )


def test_jobs_from_two_replicas_spread_over_both_nodes(
    replicas: Replicas, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    with replicas.a.http() as a, replicas.b.http(replicas.a.key) as b:
        fid = upload_rows(a, tmp_path, "t.jsonl", rows_for("sft", 32))
        ids = [create(a, fid, **SHORT), create(b, fid, **SHORT)]
        ids += [create(a, fid, **SHORT), create(b, fid, **SHORT)]
        done = [wait_terminal(a, j, timeout=300) for j in ids]
        assert [d["status"] for d in done] == ["SUCCEEDED"] * 4, done
        nodes = {n for d in done for n in d["placement"]["nodes"]}
        assert len(nodes) == 2, [d["placement"] for d in done]  # node_b and node_c
        for d in done:
            assert d["placement"]["executor"] == "ray" and d["placement"]["num_workers"] == 1
            lines = logs(b, d["job_id"])
            # Claimed and launched by exactly one of the two schedulers.
            assert sum("Submitted to Ray as job" in ln for ln in lines) == 1, lines
            node = d["placement"]["nodes"][0]
            assert any(f"Worker started on Ray node {node}" in ln for ln in lines), lines


def test_two_worker_job_on_ray_train_matches_one_worker(replicas: Replicas, tmp_path: Path) -> None:
    """Ray Train spans both nodes; same parity rule as the local data-parallel test."""
    from tests.e2e.test_data_parallel import PARITY, generate, losses, same_length_rows

    with replicas.a.http() as a:
        fid = upload_rows(a, tmp_path, "t.jsonl", same_length_rows(80))
        two = wait_terminal(a, create(a, fid, **PARITY, num_workers=2), timeout=400)
        failed = "\n".join([str(two.get("message")), *logs(a, two["job_id"])[-30:]])
        assert two["status"] == "SUCCEEDED", failed
        assert len(two["placement"]["nodes"]) == 2, two["placement"]  # one rank per node
        one = wait_terminal(a, create(a, fid, **PARITY), timeout=300)
        assert one["status"] == "SUCCEEDED", one
        x, y = losses(a, one["job_id"]), losses(a, two["job_id"])
        assert x.keys() == y.keys(), (x, y)
        diffs = [abs(x[k] - y[k]) for k in x]
        print(f"Ray Train: max |loss delta| {max(diffs):.2e}")
        assert max(diffs[:2]) < 1e-4 and max(diffs) < 0.15, diffs
        text = "\n".join(logs(a, two["job_id"]))
        assert "worker 1 of 2 started" in text and text.count("final model saved") == 1
        assert a.get(f"/fine-tunes/{two['job_id']}/checkpoints").json()["output"]
    job_dir = replicas.a.data_dir / "jobs" / str(two["job_id"])
    generate(job_dir / "final")
    saved = list((job_dir / "checkpoints").glob("checkpoint-*"))
    assert saved
    for ck in saved:  # each checkpoint of the Ray Train run loads and generates too
        generate(ck)


def test_job_created_on_a_streams_and_cancels_through_b(replicas: Replicas, tmp_path: Path) -> None:
    with replicas.a.http() as a, replicas.b.http(replicas.a.key) as b:
        fid = upload_rows(a, tmp_path, "long.jsonl", rows_for("sft", 256))
        job_id = create(a, fid, n_epochs=50, max_length=64)
        running_with_progress(b, job_id)
        seen: list[dict[str, object]] = []
        with b.stream("GET", f"/fine-tunes/{job_id}/stream", timeout=120) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                if sum(e["type"] == "metrics" for e in seen) >= 1 and len(seen) > 3:
                    break
        assert any(e["type"] == "log" and "step" in str(e["line"]) for e in seen), seen
        [pid] = worker_pids(b, job_id)
        t0 = time.monotonic()
        assert b.post(f"/fine-tunes/{job_id}/cancel").status_code == 200
        done = wait_terminal(b, job_id, timeout=60)
        assert done["status"] == "CANCELED", done
        wait_pid_gone(pid, timeout=15)  # the cancel grace is 10 s
        assert time.monotonic() - t0 < 30


def test_pause_stops_a_worker_that_does_not_pause_and_resume_continues_the_run(
    replicas: Replicas, tmp_path: Path
) -> None:
    """Pause on Ray when the worker cannot pause: frozen (SIGSTOP) before the pause, its
    heartbeat never sees PAUSING, so the executor stops its Ray job after the cancel grace,
    as the local executor's SIGTERM does. The job is PAUSED at its newest checkpoint and,
    resumed, ends as the same run as one trained without interruption (meanwhile, on the
    other node)."""
    from tests.e2e.test_resume import BASE, CASES, Watch, assert_same_run, curve

    hp = {**BASE, **CASES["sft"]}  # 48 steps, a checkpoint every 6
    hp.pop("training_type")
    with replicas.a.http() as a, replicas.b.http(replicas.a.key) as b:
        fid = upload_rows(a, tmp_path, "t.jsonl", rows_for("sft", 72))
        victim, reference = (create(a, fid, **hp) for _ in "ab")
        w = Watch(replicas.a, victim)
        pid = 0
        try:
            pid = _wait_pid(a, victim)
            w.until(lambda j: j.status == "RUNNING" and w.step(j) > BASE["save_steps"])
            w.freeze(pid)  # at a moment it holds no lock the pause must wait for
            step = w.step(w.row())
            r = b.post(f"/fine-tunes/{victim}/pause")
            assert r.status_code == 200 and r.json()["output"]["status"] == "PAUSING"
            paused = wait_for(b, victim, lambda j: j["status"] == "PAUSED", timeout=120)
            wait_pid_gone(pid, timeout=30)  # Ray's stop: SIGTERM, then SIGKILL
            text = "\n".join(logs(b, victim))
            assert paused["allowed_actions"] == ["cancel", "resume"], paused
            assert "The worker did not pause within 10 s" in text, text
            found = re.search(
                r"Worker stopped \(Ray job \S+ STOPPED[^\n]*\) while pausing; "
                r"resumes from checkpoint-(\d+)\.",
                text,
            )
            assert found, text
            resumed = int(found.group(1))
            assert resumed % BASE["save_steps"] == 0 and 0 < resumed <= step, (resumed, step)
            assert not (w.job_dir / "PAUSE").exists()  # the worker never learned of it

            r = a.post(f"/fine-tunes/{victim}/resume")
            assert r.status_code == 200 and r.json()["output"]["status"] == "QUEUING"
            done = wait_terminal(a, victim, timeout=300)
            text = "\n".join(logs(a, victim))
            assert done["status"] == "SUCCEEDED" and done["attempts"] == 1, text
            assert f"resuming from checkpoint-{resumed}" in text, text
            assert text.count("Submitted to Ray as job") == 2, text
            assert wait_terminal(a, reference, timeout=300)["status"] == "SUCCEEDED"
            assert_same_run(curve(a, victim), curve(a, reference))
        finally:
            w.close()
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                # Never left frozen, whatever failed (and only if that pid is still it).
                if pid and "dashtune.scheduler.worker" in psutil.Process(pid).cmdline():
                    os.kill(pid, signal.SIGKILL)
            for job_id in (victim, reference):  # nothing left on the nodes for the next test
                a.post(f"/fine-tunes/{job_id}/cancel")


def test_scheduler_sigkill_then_another_reattaches(
    ray_cluster: RayCluster, tmp_path: Path, database_factory
) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    url = database_factory("postgres", data)
    env = ray_env(ray_cluster)
    api = start_server(data, url, "--no-scheduler", **env)
    first = start_scheduler(data, url, "sched-1", **env)
    second = None
    try:
        with api.http() as c:
            fid = upload_rows(c, tmp_path, "long.jsonl", rows_for("sft", 256))
            job_id = create(c, fid, n_epochs=50, max_length=64)
            before = running_with_progress(c, job_id)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait()
            killed = time.monotonic()
            # Nobody schedules now, yet the job trains on: its worker reports to the store.
            wait_for(c, job_id, lambda j: j["progress"] > before["progress"], 60)
            second = start_scheduler(data, url, "sched-2", **env)
            up = time.monotonic()
            deadline = time.monotonic() + 60
            while not any("Re-attached to Ray job" in ln for ln in logs(c, job_id)):
                assert time.monotonic() < deadline, logs(c, job_id)
                time.sleep(0.2)
            now = time.monotonic()
            print(
                f"re-attached {now - up:.1f} s after the second scheduler started, "
                f"{now - killed:.1f} s after the SIGKILL (lease 6 s)"
            )
            assert c.get(f"/fine-tunes/{job_id}").json()["output"]["status"] == "RUNNING"
            [pid] = worker_pids(c, job_id)
            assert c.post(f"/fine-tunes/{job_id}/cancel").status_code == 200
            assert wait_terminal(c, job_id, timeout=60)["status"] == "CANCELED"
            wait_pid_gone(pid, timeout=15)
    finally:
        if second:
            stop_scheduler(second)
        stop_scheduler(first)
        stop_server(api)


def test_ray_executor_refuses_sqlite(ray_cluster: RayCluster, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="needs PostgreSQL"):
        start_server(tmp_path / "d", "", **ray_env(ray_cluster))


def test_node_death_fails_its_job_naming_the_node(
    replicas: Replicas, ray_cluster: RayCluster, tmp_path: Path
) -> None:
    with replicas.a.http() as a:
        fid = upload_rows(a, tmp_path, "long.jsonl", rows_for("sft", 256))
        ids = [create(a, fid, n_epochs=50, max_length=64) for _ in range(2)]
        jobs = [running_with_progress(a, j) for j in ids]
        node_c = next(n for n in ray_cluster.nodes if n.name == "node_c")
        alive = wait_nodes(ray_cluster, 3)
        node_c.node_id = next(n.node_id for n in alive if n.resources_total.get("node_c"))
        [victim] = [j for j in jobs if j["placement"]["nodes"] == [node_c.node_id]]  # type: ignore[index]
        [other] = [j for j in jobs if j is not victim]
        ray_cluster.kill_node(node_c)
        done = wait_terminal(a, str(victim["job_id"]), timeout=90)
        assert done["status"] == "FAILED" and done["code"] == "WorkerLost", done
        assert node_c.node_id in done["message"], done
        assert a.get(f"/fine-tunes/{other['job_id']}").json()["output"]["status"] == "RUNNING"
        assert a.post(f"/fine-tunes/{other['job_id']}/cancel").status_code == 200
        assert wait_terminal(a, str(other["job_id"]), timeout=60)["status"] == "CANCELED"


def test_lost_node_retries_its_job_on_another_from_its_checkpoint(
    ray_cluster: RayCluster, tmp_path: Path, database_factory
) -> None:  # type: ignore[no-untyped-def]
    """The lost-worker retry of services/engine.py on Ray: a node dies under a job after its
    first checkpoint; the job is queued again and its second attempt resumes from that
    checkpoint on the other node, as the same run as one trained without interruption
    (run at the same time, on the other node). Its own server: the replicas fail lost jobs
    (DASHTUNE_MAX_ATTEMPTS=1, test above)."""
    from tests.e2e.test_resume import BASE, CASES, assert_same_run, curve

    ray_cluster.add_node("node_d", num_cpus=1)  # node_c died in the test above
    wait_nodes(ray_cluster, len(ray_cluster.nodes))
    data = tmp_path / "data"
    url = database_factory("postgres", data)
    env = {**ray_env(ray_cluster), "DASHTUNE_MAX_ATTEMPTS": "3"}
    srv = start_server(data, url, **env)
    rt = srv.runtime()
    pid: int | None = None
    try:
        with srv.http() as c:
            hp = {**BASE, **CASES["sft"], "n_epochs": 6}  # 96 steps, a checkpoint every 6
            hp.pop("training_type")
            fid = upload_rows(c, tmp_path, "t.jsonl", rows_for("sft", 72))
            victim, reference = (create(c, fid, **hp) for _ in "ab")
            # A job is RUNNING from its claim; its placement has no nodes until the worker
            # starts on one (older servers had no placement at all until the launch).
            job = wait_for(
                c,
                victim,
                lambda j: j["status"] == "RUNNING" and (j.get("placement") or {}).get("nodes"),
            )
            [node_id] = job["placement"]["nodes"]
            pid = _wait_pid(c, victim)
            # Freeze the worker once a step after its first checkpoint is logged, so the
            # node dies with the job mid-run however fast the tiny model trains.
            step = _freeze_after(rt, victim, pid, BASE["save_steps"] + 1)
            alive = {n.node_id: n for n in wait_nodes(ray_cluster, len(ray_cluster.nodes))}
            name = next(
                k for k in ("node_b", "node_c", "node_d") if alive[node_id].resources_total.get(k)
            )
            node = next(n for n in ray_cluster.nodes if n.name == name)
            ray_cluster.kill_node(node)
            t0 = time.monotonic()
            done = _ended(c, victim, srv, timeout=180)
            text = "\n".join(logs(c, victim))
            print(
                f"node {name} killed at step {step}; job ended {time.monotonic() - t0:.1f} s later"
            )
            assert done["status"] == "SUCCEEDED" and done["attempts"] == 2, text
            found = re.search(
                rf"Worker lost at step {step} \(Ray node {node_id} died under it[^\n]*\); "
                r"attempt 2 of 3 resumes from checkpoint-(\d+)\.",
                text,
            )
            assert found, text
            resumed = int(found.group(1))
            assert resumed % BASE["save_steps"] == 0 and 0 < resumed <= step, text
            assert f"resuming from checkpoint-{resumed}" in text, text
            assert text.count("Submitted to Ray as job") == 2, text
            assert done["placement"]["nodes"] and node_id not in done["placement"]["nodes"]
            assert wait_terminal(c, reference, timeout=120)["status"] == "SUCCEEDED"
            assert_same_run(curve(c, victim), curve(c, reference))
            # Ray left the worker of the lost node running (here frozen): as if its node
            # came back, let it go on. It learns it was given up on and exits, changing
            # nothing (its database session, cut while it held the job's row lock, ended
            # after IDLE_MS: store/db.py).
            before = curve(c, victim)
            os.kill(pid, signal.SIGCONT)
            wait_pid_gone(pid, timeout=30)
            after = c.get(f"/fine-tunes/{victim}").json()["output"]
            assert after["status"] == "SUCCEEDED" and after["attempts"] == 2, after
            assert curve(c, victim) == before
    finally:
        rt.close()
        stop_server(srv)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)  # never left frozen, whatever failed


def _ended(c: httpx.Client, job_id: str, srv: Server, timeout: float) -> dict[str, Any]:
    """The job once ended; else its logs and the server's in the failure."""
    try:
        return wait_terminal(c, job_id, timeout=timeout)
    except AssertionError as exc:
        tail = srv.log_path.read_text()[-6000:]
        raise AssertionError(f"{exc}\n" + "\n".join(logs(c, job_id)) + "\n---\n" + tail) from None


def _wait_pid(c: httpx.Client, job_id: str, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while not (pids := worker_pids(c, job_id)):
        assert time.monotonic() < deadline, logs(c, job_id)
        time.sleep(0.05)
    return pids[0]


def _freeze_after(rt: Runtime, job_id: str, pid: int, step: int, timeout: float = 180) -> int:
    """SIGSTOP the worker once the job's logged step reaches `step`; the step it froze at."""
    deadline = time.monotonic() + timeout
    while True:
        with rt.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.status == "RUNNING", job and job.status
            now = int((job.metrics or {}).get("step", 0))
        if now >= step:
            os.kill(pid, signal.SIGSTOP)
            with rt.db.read() as s:  # a step logged between the read and the signal
                job = s.get(Job, job_id)
                return int((job.metrics or {}).get("step", 0)) if job else now
        assert time.monotonic() < deadline, now
        time.sleep(0.01)
