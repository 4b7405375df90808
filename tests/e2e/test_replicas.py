"""Two `dashtune serve` replicas, each with its scheduler and the local executor, on one
PostgreSQL database and one data directory (one host): each job is launched by exactly
one scheduler, each scheduler keeps its own concurrency limit and leaves the other's
workers alone, and SIGKILL of the replica under a training job loses nothing: the other
replica answers on, its scheduler adopts the running worker (same pid, same attempt) once
the killed process is gone and owns the job once the dead scheduler's lease expires, and
the job trains on to SUCCEEDED."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select

from tests.conftest import BACKENDS, Server, start_server, stop_server
from tests.e2e.conftest import (
    TERMINAL,
    freeze_worker,
    rows_for,
    upload_rows,
    wait_for,
    wait_gone,
    wait_terminal,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif("postgres" not in BACKENDS, reason="replicas share a PostgreSQL database"),
]

LEASE = 6.0
ENV = {
    "DASHTUNE_EXECUTOR": "local",
    "DASHTUNE_SERVING": "false",
    "DASHTUNE_MAX_CONCURRENT_JOBS": "1",  # per scheduler: one job each, a third waits
    "DASHTUNE_HEARTBEAT_INTERVAL": "1",
    "DASHTUNE_CANCEL_GRACE_SECONDS": "3",
    "DASHTUNE_SCHEDULER_LEASE_SECONDS": str(LEASE),
}
LIVENESS = 120.0  # a bound on the take-over, not a timing: the figure is printed


def create(c: httpx.Client, fid: str, **hyper: Any) -> str:
    body = {"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hyper}
    r = c.post("/fine-tunes", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["output"]["job_id"])


def job_logs(c: httpx.Client, job_id: str) -> list[str]:
    out = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]["logs"]
    return [str(x) for x in out]


def live_workers(job_ids: list[str]) -> dict[int, str]:
    """pid -> job id of the worker processes of these jobs (no one else's)."""
    out = {}
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        zombie = p.info["status"] == psutil.STATUS_ZOMBIE
        if "dashtune.scheduler.worker" in cmd and cmd[-1] in job_ids and not zombie:
            out[p.pid] = cmd[-1]
    return out


def owner_pid(scheduler_id: str | None) -> int | None:
    """The process of a scheduler id ("host:pid:token")."""
    return int(scheduler_id.split(":")[1]) if scheduler_id else None


def rows(srv: Server, job_ids: list[str]) -> dict[str, Any]:
    from dashtune.store.tables import Job

    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            return {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(job_ids)))}
    finally:
        rt.close()


def launches(srvs: list[Server], job_id: str) -> int:
    """How many times the schedulers of these servers started a worker for the job."""
    return sum(len(re.findall(rf"job {job_id} started in worker pid", s.log_text())) for s in srvs)


@pytest.fixture
def replicas(tmp_path: Path, database_factory) -> Iterator[list[Server]]:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    url = database_factory("postgres", data)
    a = start_server(data, url, log_name="replica-a.log", **ENV)
    b = start_server(data, url, log_name="replica-b.log", **ENV)
    b.key = a.key  # one database: one set of keys
    try:
        yield [a, b]
    finally:
        stop_server(a)
        stop_server(b)


def test_sigkill_of_a_replica_under_a_job_its_worker_is_adopted(
    replicas: list[Server], tmp_path: Path
) -> None:
    a, b = replicas
    frozen: int | None = None
    ids: list[str] = []
    try:
        with a.http() as c:
            short = upload_rows(c, tmp_path, "short.jsonl", rows_for("sft", 64))
            tiny = upload_rows(c, tmp_path, "tiny.jsonl", rows_for("sft", 16))
            long = upload_rows(c, tmp_path, "long.jsonl", rows_for("sft", 256))
            # Created in this order, claimed in this order: one job per scheduler, the
            # third waits for a free slot.
            adoptee = create(c, short, n_epochs=3, batch_size=4, max_length=64)
            other = create(c, long, n_epochs=50, max_length=64)
            queued = create(c, tiny, n_epochs=1, batch_size=8, max_length=64)
            ids = [adoptee, other, queued]
            # Frozen once it trains, the adoptee cannot end before it is taken over.
            wait_for(c, adoptee, lambda j: j["status"] == "RUNNING" and j["progress"] > 0, 180)
            frozen = rows(a, [adoptee])[adoptee].worker_pid
            assert frozen is not None
            freeze_worker(a, frozen)
            wait_for(c, other, lambda j: j["status"] == "RUNNING" and j["progress"] > 0, 180)
            third = wait_for(c, queued, lambda j: j["status"] != "PENDING")
            assert third["status"] == "QUEUING", third
        now = rows(a, ids)
        owners = {jid: owner_pid(now[jid].scheduler_id) for jid in (adoptee, other)}
        # Each scheduler runs one job: neither took the other's, and the third waits.
        assert sorted(owners.values()) == sorted([a.proc.pid, b.proc.pid]), owners
        for jid in ids:
            assert now[jid].attempts == (1 if jid != queued else 0), (jid, now[jid].attempts)
            assert launches([a, b], jid) == (1 if jid != queued else 0), jid
        victim, survivor = (a, b) if owners[adoptee] == a.proc.pid else (b, a)
        other_pid = now[other].worker_pid
        assert other_pid is not None

        os.kill(victim.proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.proc.wait()
        assert psutil.Process(frozen).is_running()  # the worker outlives its server

        with survivor.http(a.key) as c:
            # The survivor answers: list, get, stream, and (below) cancel.
            listed = c.get("/fine-tunes", params={"page_size": 100}).json()["output"]["jobs"]
            assert {j["job_id"] for j in listed} >= set(ids)
            assert c.get(f"/fine-tunes/{adoptee}").json()["output"]["status"] == "RUNNING"
            seen: list[dict[str, Any]] = []
            with c.stream("GET", f"/fine-tunes/{other}/stream", timeout=120) as r:
                assert r.status_code == 200
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))
                    if any(e["type"] == "metrics" for e in seen) and len(seen) > 3:
                        break
            assert any(e["type"] == "log" and "step" in str(e["line"]) for e in seen), seen

            # Taken over by the surviving scheduler, its worker adopted, not restarted.
            adopted = owned = None
            while adopted is None or owned is None:
                job = rows(survivor, [adoptee])[adoptee]
                lines = job_logs(c, adoptee)
                if adopted is None and any(f"Worker pid {frozen} adopted" in x for x in lines):
                    adopted = time.monotonic() - killed
                if owned is None and owner_pid(job.scheduler_id) == survivor.proc.pid:
                    owned = time.monotonic() - killed
                assert job.status == "RUNNING", (job.status, lines)
                assert time.monotonic() - killed < LIVENESS, lines
                time.sleep(0.1)
            assert job.worker_pid == frozen and job.attempts == 1, lines
            assert any("is gone;" in ln and "took the job" in ln for ln in lines), lines
            print(
                f"\nreplica SIGKILLed under job {adoptee}: its worker adopted {adopted:.1f} s "
                f"later, the job owned by the surviving scheduler {owned:.1f} s later "
                f"(lease {LEASE:g} s)"
            )
            # Every worker alive now belongs to a job of the living scheduler.
            alive = rows(survivor, ids)
            for pid, jid in live_workers(ids).items():
                assert owner_pid(alive[jid].scheduler_id) == survivor.proc.pid, (pid, jid)
                assert alive[jid].worker_pid == pid

            assert c.post(f"/fine-tunes/{other}/cancel").status_code == 200
            assert wait_terminal(c, other, timeout=60)["status"] == "CANCELED"
            wait_gone(other_pid, timeout=30)
            # The adopted worker holds the survivor's one slot: several ticks later the
            # third job still waits.
            time.sleep(3)
            assert c.get(f"/fine-tunes/{queued}").json()["output"]["status"] == "QUEUING"

            os.kill(frozen, signal.SIGCONT)
            frozen_pid, frozen = frozen, None
            done = wait_terminal(c, adoptee, timeout=180)
            assert done["status"] == "SUCCEEDED", (done, job_logs(c, adoptee))
            assert done["attempts"] == 1
            wait_gone(frozen_pid, timeout=30)
            last = wait_terminal(c, queued, timeout=180)
            assert last["status"] == "SUCCEEDED", (last, job_logs(c, queued))

        end = rows(survivor, ids)
        statuses = {k: j.status for k, j in end.items()}
        assert all(x in TERMINAL for x in statuses.values()), statuses
        assert owner_pid(end[queued].scheduler_id) == survivor.proc.pid
        for jid in ids:  # each job launched once, the adoptee included
            assert launches([a, b], jid) == 1, jid
        assert not live_workers(ids)
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        for pid in live_workers(ids):
            os.kill(pid, signal.SIGKILL)
