"""create → RUNNING with a free slot, for the control_plane section.

One `dashtune serve` with the local executor and one slot: `--starts` times in a row,
create a tiny-model job, poll it every 10 ms until RUNNING, then cancel it and wait for
its worker to go, so the next create finds the slot free again. The figure is what the
client sees: POST sent → first GET that answers RUNNING (10 ms polling granularity; the
rows' own times are whole seconds).

It imports only the test fixtures and httpx, so it also measures an older checkout:
`PYTHONPATH=/path/to/old/src:. python -c 'from bench import start_latency as s; ...'`.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import BIN, start_server, stop_server
from tests.e2e.conftest import rows_for, upload_rows

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELED")


@dataclass(frozen=True)
class StartLatency:
    seconds: list[float]  # POST sent -> first GET answering RUNNING, one per start

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def worst(self) -> float:
        return max(self.seconds) if self.seconds else float("nan")


def measure(database_url: str, starts: int, workdir: Path | None = None) -> StartLatency:
    """Start a server on `database_url` ('' = SQLite) and time `starts` create → RUNNING."""
    with tempfile.TemporaryDirectory(prefix="dashtune-start-") as d:
        root = workdir or Path(d)
        srv = start_server(
            root / "start-server",
            database_url,
            DASHTUNE_EXECUTOR="local",
            DASHTUNE_SERVING="false",
            DASHTUNE_MAX_CONCURRENT_JOBS="1",
            DASHTUNE_CANCEL_GRACE_SECONDS="2",
        )
        seconds: list[float] = []
        try:
            with srv.http() as c:
                fid = upload_rows(c, root, "start.jsonl", rows_for("sft", 16))
                body = {
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "training_type": "sft",
                    "hyper_parameters": {"n_epochs": 50, "batch_size": 4},
                }
                for _ in range(starts):
                    t0 = time.perf_counter()
                    r = c.post("/fine-tunes", json=body)
                    r.raise_for_status()
                    job_id = r.json()["output"]["job_id"]
                    deadline = time.monotonic() + 60
                    while True:
                        status = c.get(f"/fine-tunes/{job_id}").json()["output"]["status"]
                        if status == "RUNNING" or status in TERMINAL:
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"job {job_id} did not start in 60 s")
                        time.sleep(0.01)
                    if status != "RUNNING":
                        raise RuntimeError(f"job {job_id} ended {status} before RUNNING")
                    seconds.append(time.perf_counter() - t0)
                    c.post(f"/fine-tunes/{job_id}/cancel")
                    deadline = time.monotonic() + 120
                    while c.get(f"/fine-tunes/{job_id}").json()["output"]["status"] not in TERMINAL:
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"job {job_id} did not end after cancel")
                        time.sleep(0.1)
        finally:
            stop_server(srv)
        return StartLatency(seconds)


def across_processes(database_url: str, creates: int, interval: float = 10.0) -> list[float]:
    """PostgreSQL: an API with no scheduler and a `dashtune scheduler` process whose tick is
    `interval` seconds; seconds from POST to the job leaving PENDING (validated by the other
    process). Well under `interval` only when the create's NOTIFY wakes that process."""
    with tempfile.TemporaryDirectory(prefix="dashtune-notify-") as d:
        root = Path(d)
        api = start_server(
            root / "data",
            database_url,
            DASHTUNE_SCHEDULER="false",
            DASHTUNE_EXECUTOR="none",
            DASHTUNE_SERVING="false",
        )
        env = dict(api.env, DASHTUNE_SCHEDULER_INTERVAL=str(interval))
        with open(root / "scheduler.log", "wb") as log:
            sched = subprocess.Popen(
                [str(BIN / "dashtune"), "scheduler", "--data-dir", str(api.data_dir)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        out: list[float] = []
        try:
            time.sleep(3)  # the scheduler's first tick and LISTEN
            with api.http() as c:
                fid = upload_rows(c, root, "t.jsonl", rows_for("sft", 8))
                for _ in range(creates):
                    t0 = time.perf_counter()
                    body = {"model": "dashtune-tiny", "training_file_ids": [fid]}
                    r = c.post("/fine-tunes", json=body)
                    r.raise_for_status()
                    job_id = r.json()["output"]["job_id"]
                    deadline = time.monotonic() + 3 * interval
                    while c.get(f"/fine-tunes/{job_id}").json()["output"]["status"] == "PENDING":
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"job {job_id} still PENDING")
                        time.sleep(0.01)
                    out.append(time.perf_counter() - t0)
        finally:
            sched.terminate()
            try:
                sched.wait(timeout=20)
            except subprocess.TimeoutExpired:
                sched.kill()
            stop_server(api)
        return out
