"""`make bench` training section: a dashtune job vs the same training in a plain TRL script.

Two workloads. Small: the tiny model on uniform 64-token samples, same hyper-parameters,
one torch thread each, run one after the other in this process's session; prints wall
times (ratio), trainer tokens/s for both, create→RUNNING latency and cancel→worker-gone
latency. Realistic (bench/realistic.py): 1,000 long-tailed chat samples on a ~23M Qwen2.
`--workload small|realistic|both` (default both); `--realistic-samples N` shrinks the
realistic one for a quick run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.table import Table
from tests.conftest import start_server, stop_server
from tests.e2e.conftest import rows_for, write_jsonl

EPOCHS, BATCH, LR, MAX_LEN = 3, 8, 3e-3, 64
TRAIN_TPS = re.compile(r"trained \d+ steps in [\d.]+ s \((\d+) tokens/s")
HP = {
    "n_epochs": EPOCHS,
    "batch_size": BATCH,
    "learning_rate": LR,
    "max_length": MAX_LEN,
    "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.05,
    "logging_steps": 5,
    "eval_steps": 1000,
    "save_strategy": "epoch",
    "split": 0.99,
}


def _plain(data: Path, model_dir: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).with_name("plain_trl.py")),
        "--data",
        str(data),
        "--model",
        model_dir,
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        str(BATCH),
        "--learning-rate",
        str(LR),
        "--max-length",
        str(MAX_LEN),
    ]
    t0 = time.perf_counter()
    out = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        check=True,
        env={"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = time.perf_counter() - t0
    return dict(result)


def _poll(c: httpx.Client, job_id: str, pred: Any, period: float = 0.02) -> dict[str, Any]:
    while True:
        job = c.get(f"/fine-tunes/{job_id}").json()["output"]
        if pred(job):
            return dict(job)
        if job["status"] in ("FAILED", "CANCELED") and not pred(job):
            raise RuntimeError(job)
        time.sleep(period)


def _dashtune(tmp: Path, data: Path) -> dict[str, Any]:
    srv = start_server(
        tmp / "server",
        "",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_SCHEDULER_INTERVAL="0.1",
        DASHTUNE_HEARTBEAT_INTERVAL="1",
    )
    try:
        with srv.http() as c:
            fid = c.post("/files", files={"files": ("b.jsonl", data.read_bytes())}).json()["data"][
                "uploaded_files"
            ][0]["file_id"]
            # Warm-up job: builds the tiny model once, as a real install would have.
            warm = c.post(
                "/fine-tunes",
                json={
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "hyper_parameters": {"max_length": MAX_LEN},
                },
            ).json()["output"]
            _poll(c, warm["job_id"], lambda j: j["status"] == "SUCCEEDED", 0.2)
            t0 = time.perf_counter()
            job = c.post(
                "/fine-tunes",
                json={"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": HP},
            ).json()["output"]
            _poll(c, job["job_id"], lambda j: j["status"] == "RUNNING")
            running_s = time.perf_counter() - t0
            done = _poll(c, job["job_id"], lambda j: j["status"] == "SUCCEEDED", 0.05)
            wall_s = time.perf_counter() - t0
            logs = c.get(f"/fine-tunes/{job['job_id']}/logs", params={"line": 1000}).json()[
                "output"
            ]["logs"]
            # The trainer's own summary: tokens / seconds of the whole trainer.train().
            tps = [float(m.group(1)) for line in logs if (m := TRAIN_TPS.search(line))]
            # Cancel latency: a long job, cancel once it trains, time until its process is gone.
            long = c.post(
                "/fine-tunes",
                json={
                    "model": "dashtune-tiny",
                    "training_file_ids": [fid],
                    "hyper_parameters": {**HP, "n_epochs": 100},
                },
            ).json()["output"]
            _poll(c, long["job_id"], lambda j: j["progress"] > 0, 0.1)
            rt = srv.runtime()
            from dashtune.store.tables import Job

            with rt.db.read() as s:
                pid = s.get(Job, long["job_id"]).worker_pid  # type: ignore[union-attr]
            rt.close()
            t1 = time.perf_counter()
            c.post(f"/fine-tunes/{long['job_id']}/cancel")
            while (
                pid
                and psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            ):
                time.sleep(0.01)
            gone_s = time.perf_counter() - t1
            _poll(c, long["job_id"], lambda j: j["status"] == "CANCELED", 0.05)
            canceled_s = time.perf_counter() - t1
        return {
            "wall_s": wall_s,
            "running_s": running_s,
            "usage": done["usage"],
            "tokens_per_s": tps[-1] if tps else float("nan"),
            "cancel_gone_s": gone_s,
            "cancel_status_s": canceled_s,
        }
    finally:
        stop_server(srv)


def run(args: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="bench training")
    p.add_argument("--workload", choices=("small", "realistic", "both"), default="both")
    workload = p.parse_known_args(args or [])[0].workload
    if workload in ("small", "both"):
        _small()
    if workload in ("realistic", "both"):
        from bench import realistic

        realistic.run(args)


def _small() -> None:
    console = Console()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = write_jsonl(tmp / "train.jsonl", rows_for("sft", 512))
        from dashtune.trainer.tiny import ensure_tiny_model

        model_dir = ensure_tiny_model(str(tmp / "tiny"))
        console.print(
            "[bold]training[/bold]: sft, dashtune-tiny, 512 samples, "
            f"{EPOCHS} epochs, batch {BATCH}, max_length {MAX_LEN}, 1 torch thread"
        )
        plain = _plain(data, model_dir)
        dash = _dashtune(tmp, data)
    table = Table(title="dashtune job vs plain TRL script (same model, data, hyper-parameters)")
    for col in ("metric", "dashtune", "plain TRL", "ratio dashtune/plain"):
        table.add_column(col, justify="right")
    table.add_row(
        "wall s (create→SUCCEEDED vs script start→exit)",
        f"{dash['wall_s']:.2f}",
        f"{plain['process_wall_s']:.2f}",
        f"{dash['wall_s'] / plain['process_wall_s']:.2f}",
    )
    table.add_row(
        "trainer tokens/s (whole trainer.train(), both)",
        f"{dash['tokens_per_s']:.0f}",
        f"{plain['train_tokens_per_s']:.0f}",
        f"{dash['tokens_per_s'] / plain['train_tokens_per_s']:.2f}",
    )
    table.add_row("tokens trained", str(dash["usage"]), str(plain.get("tokens", "")), "")
    console.print(table)
    lat = Table(title="dashtune latencies")
    lat.add_column("what")
    lat.add_column("seconds", justify="right")
    lat.add_row("create → RUNNING", f"{dash['running_s']:.3f}")
    lat.add_row("cancel → worker process gone", f"{dash['cancel_gone_s']:.3f}")
    lat.add_row("cancel → status CANCELED", f"{dash['cancel_status_s']:.3f}")
    console.print(lat)
