"""`python -m bench estimate`: the pre-flight estimate (POST /api/v1/fine-tunes/estimate).

1. Speed: a `--lines`-line SFT file (default 10,000) estimated `--runs` times after one
   warm-up call, against a baseline in the same run: reading and JSON-parsing the same
   file in this process (the floor of any per-line check). Goal: under 2 s.
   Beside the wall time, the server's CPU seconds per estimate: the figure that load
   on a shared machine does not inflate.
2. With `--duration`: the duration estimate against a real run. A server with the local
   executor trains one job of the tiny model (`--first-rows` rows), then the estimate for
   a second job of the same model and hyper-parameters but another size (`--second-rows`)
   is compared with that job's own RUNNING-to-end time (goal: within 30 %).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from tests.conftest import Server, start_server, stop_server
from tests.e2e.conftest import rows_for, wait_terminal

console = Console()


def _parse(args: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench estimate")
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--duration", action="store_true", help="also check the duration estimate")
    p.add_argument("--first-rows", type=int, default=256)
    p.add_argument("--second-rows", type=int, default=640)
    return p.parse_known_args(args)[0]


def _upload(c: httpx.Client, path: Path) -> str:
    r = c.post("/files", files={"files": (path.name, path.read_bytes())})
    r.raise_for_status()
    return str(r.json()["data"]["uploaded_files"][0]["file_id"])


def _speed(opts: argparse.Namespace, tmp: Path) -> None:
    path = tmp / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows_for("sft", opts.lines, seed=5)))
    srv = start_server(tmp / "srv", "", DASHTUNE_EXECUTOR="none", DASHTUNE_SERVING="false")
    try:
        with httpx.Client(
            base_url=srv.api, headers={"Authorization": f"Bearer {srv.key}"}, timeout=600
        ) as c:
            body = {"model": "dashtune-tiny", "training_file_ids": [_upload(c, path)]}
            started = time.perf_counter()
            c.post("/fine-tunes/estimate", json=body).raise_for_status()
            console.print(f"warm-up (builds the tiny model): {time.perf_counter() - started:.1f} s")
            times, cpu = [], []
            for _ in range(opts.runs):
                cpu_before = _cpu_seconds(srv)
                started = time.perf_counter()
                out = c.post("/fine-tunes/estimate", json=body).json()["output"]
                times.append(time.perf_counter() - started)
                cpu.append(_cpu_seconds(srv) - cpu_before)
        started = time.perf_counter()
        with open(path, "rb") as f:
            for line in f:
                json.loads(line)
        floor = time.perf_counter() - started
    finally:
        stop_server(srv)
    median = statistics.median(times)
    console.print(
        f"{opts.lines} lines, {out['train_tokens_per_epoch']} tokens/epoch: estimate median "
        f"{median:.2f} s (min {min(times):.2f}, max {max(times):.2f}) over {opts.runs} runs; "
        f"baseline read+parse {floor:.2f} s; ratio {median / floor:.1f}x; server CPU "
        f"{statistics.median(cpu):.2f} s per estimate; goal < 2 s: "
        + ("[green]met[/green]" if median < 2 else "[red]missed[/red]")
    )


def _cpu_seconds(srv: Server) -> float:
    """User+system CPU seconds of the server process and its live children, threads included."""
    proc = psutil.Process(srv.proc.pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def _running_seconds(srv: Server, job_id: str) -> float:
    """RUNNING to end, as the estimate measures earlier jobs (whole seconds)."""
    from dashtune.store.tables import Job

    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.start_time and job.end_time
            return (job.end_time - job.start_time).total_seconds()
    finally:
        rt.close()


def _duration(opts: argparse.Namespace, tmp: Path) -> None:
    srv = start_server(tmp / "train", "", DASHTUNE_EXECUTOR="local", DASHTUNE_SERVING="false")
    hp = {"n_epochs": 4, "batch_size": 8, "max_length": 64}
    try:
        with httpx.Client(
            base_url=srv.api, headers={"Authorization": f"Bearer {srv.key}"}, timeout=600
        ) as c:

            def body(rows: int, seed: int) -> dict[str, Any]:
                path = tmp / f"train-{rows}.jsonl"
                path.write_text(
                    "".join(json.dumps(r) + "\n" for r in rows_for("sft", rows, seed=seed))
                )
                ids = [_upload(c, path)]
                return {"model": "dashtune-tiny", "training_file_ids": ids, "hyper_parameters": hp}

            first_body, second_body = body(opts.first_rows, 2), body(opts.second_rows, 7)
            first = c.post("/fine-tunes", json=first_body).json()["output"]["job_id"]
            wait_terminal(c, first)
            out = c.post("/fine-tunes/estimate", json=second_body).json()["output"]
            est, tokens = out["duration"], out["total_tokens"]
            first_usage = c.get(f"/fine-tunes/{first}").json()["output"]["usage"]
            second = c.post("/fine-tunes", json=second_body).json()["output"]["job_id"]
            wait_terminal(c, second)
        predicted = est["seconds"]
        actual = _running_seconds(srv, second)
        earlier = _running_seconds(srv, first)
    finally:
        stop_server(srv)
    error = abs(predicted - actual) / actual
    # What one rate over whole wall times (the estimator before start-up was separated)
    # would have said: the second job's tokens at the first job's usage / wall time.
    naive = tokens * earlier / first_usage
    console.print(
        f"first job ({opts.first_rows} rows) {earlier:.0f} s; measured "
        f"{est['tokens_per_second']:.0f} tokens/s after {est.get('startup_seconds')} s of "
        f"start-up; estimate for the second ({opts.second_rows} rows) {predicted} s; it took "
        f"{actual:.0f} s (RUNNING to end, whole seconds); error {error * 100:.0f} %; goal "
        "within 30 %: "
        + ("[green]met[/green]" if error <= 0.3 else "[red]missed[/red]")
        + f"; one rate over whole wall times would say {naive:.1f} s "
        f"(error {abs(naive - actual) / actual * 100:.0f} %)"
    )


def run(args: list[str]) -> None:
    opts = _parse(args)
    with tempfile.TemporaryDirectory(prefix="dashtune-bench-estimate-") as tmp:
        _speed(opts, Path(tmp))
        if opts.duration:
            _duration(opts, Path(tmp))
