"""`make bench` resume section: what resume points cost.

1. Checkpoint write time and size, model only (`save_only_model`) vs a full resume point
   (plus optimizer, LR scheduler, RNG and trainer state), written atomically as jobs do
   (staging dir + rename), for full SFT and LoRA on dashtune-tiny and on a larger random
   Qwen3 (`--resume-hidden`, `--resume-layers`). In this process, one torch thread.
2. On a real server: time from a SIGKILLed worker to training again (re-queued, new
   worker running, first new step logged), next to the same times of a fresh job (create
   -> first step), the baseline every job pays.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from tests.conftest import start_server, stop_server
from tests.e2e.conftest import rows_for, upload_rows, write_jsonl


def _options(args: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench resume")
    p.add_argument("--resume-hidden", type=int, default=256)
    p.add_argument("--resume-layers", type=int, default=4)
    p.add_argument("--resume-saves", type=int, default=3, help="checkpoint writes timed each")
    p.add_argument("--resume-kills", type=int, default=2, help="worker kills timed")
    return p.parse_known_args(args)[0]


class _Quiet:
    """A Reporter that drops everything: the bench prints its own table."""

    def log(self, line: str) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def progress(self, step: int, total_steps: int, eta_seconds: float | None) -> None: ...

    def checkpoint(self, name: str, step: int, path: str, metrics: dict[str, float]) -> None: ...

    def checkpoint_removed(self, name: str) -> None: ...


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _write_costs(tmp: Path, model: str, training_type: str, saves: int) -> dict[str, Any]:
    """(seconds, bytes) of a model-only checkpoint and of a full resume point."""
    from tests.trainer.tasks import hyper_parameters

    from dashtune.trainer import run
    from dashtune.trainer.model import load_model, load_tokenizer
    from dashtune.trainer.resume import atomic_checkpoints
    from dashtune.trainer.spec import TrainSpec

    data = write_jsonl(tmp / f"{training_type}.jsonl", rows_for(training_type, 32))
    hp = hyper_parameters(training_type, n_epochs=1, save_strategy="no", batch_size=8)
    spec = TrainSpec(
        job_id="bench",
        training_type=training_type,
        model_path=model,
        adapter_path=None,
        training_files=[str(data)],
        validation_files=[],
        hyper_parameters=hp,
        output_dir=str(tmp / f"out-{training_type}-{Path(model).name}"),
        stop_file="",
    )
    tok = load_tokenizer(model)
    samples, _ = run._datasets(spec, tok, _Quiet())
    trainer = run._build_trainer(spec, load_model(spec), tok, samples, [], [])
    atomic_checkpoints(trainer)
    trainer.train()  # optimizer state exists only after a step
    out: dict[str, Any] = {}
    root = Path(trainer.args.output_dir)
    for label, only_model in (("model only", True), ("resume point", False)):
        trainer.args.save_only_model = only_model
        times = []
        for i in range(saves):
            trainer.state.global_step = 1000 + i + (0 if only_model else 100)
            t0 = time.perf_counter()
            trainer._save_checkpoint(trainer.model, None)
            times.append(time.perf_counter() - t0)
        newest = root / f"checkpoint-{trainer.state.global_step}"
        out[label] = (statistics.median(times), _size(newest))
    return out


def _poll_row(rt: Any, job_id: str, pred: Any, timeout: float = 600) -> float:
    from dashtune.store.tables import Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with rt.db.read() as s:
            job = s.get(Job, job_id)
        if pred(job):
            return time.perf_counter()
        time.sleep(0.01)
    raise TimeoutError(job_id)


def _step(job: Any) -> int:
    return int((job.metrics or {}).get("step", 0))


def _loss_to_training(tmp: Path, kills: int) -> dict[str, list[float]]:
    srv = start_server(
        tmp / "server",
        "",
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_SCHEDULER_INTERVAL="0.1",
        DASHTUNE_HEARTBEAT_INTERVAL="1",
        DASHTUNE_MAX_ATTEMPTS=str(kills + 1),
        DASHTUNE_SERVING="false",
    )
    rt = srv.runtime()
    times: dict[str, list[float]] = {"requeued": [], "running": [], "training": [], "fresh": []}
    try:
        with srv.http() as c:
            fid = upload_rows(c, tmp, "r.jsonl", rows_for("sft", 256))
            hp = {"max_length": 64, "n_epochs": 20, "logging_steps": 1, "save_steps": 10}
            job_id = c.post(
                "/fine-tunes",
                json={"model": "dashtune-tiny", "training_file_ids": [fid], "hyper_parameters": hp},
            ).json()["output"]["job_id"]
            # Baseline: a fresh job from RUNNING to its first logged step (builds tiny once).
            started = _poll_row(rt, job_id, lambda j: j.status == "RUNNING")
            times["fresh"].append(_poll_row(rt, job_id, lambda j: _step(j) >= 1) - started)
            for attempt in range(1, kills + 1):
                from dashtune.store.tables import Job

                _poll_row(rt, job_id, lambda j, a=attempt: j.attempts == a and _step(j) >= 15)
                with rt.db.read() as s:
                    job = s.get(Job, job_id)
                    assert job is not None and job.worker_pid
                    pid = job.worker_pid
                os.kill(pid, signal.SIGKILL)
                lost = time.perf_counter()
                requeued = _poll_row(rt, job_id, lambda j, a=attempt: j.attempts == a + 1)
                resumed_at = _step(_row(rt, job_id))
                running = _poll_row(
                    rt,
                    job_id,
                    lambda j, old=pid: j.status == "RUNNING" and j.worker_pid not in (None, old),
                )
                training = _poll_row(rt, job_id, lambda j, r=resumed_at: _step(j) > r)
                times["requeued"].append(requeued - lost)
                times["running"].append(running - lost)
                times["training"].append(training - lost)
            c.post(f"/fine-tunes/{job_id}/cancel")
    finally:
        rt.close()
        stop_server(srv)
    return times


def _row(rt: Any, job_id: str) -> Any:
    from dashtune.store.tables import Job

    with rt.db.read() as s:
        return s.get(Job, job_id)


def run(args: list[str] | None = None) -> None:
    opts = _options(args or [])
    console = Console()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        from bench.serving import _larger_model
        from dashtune.trainer.tiny import ensure_tiny_model

        tiny = ensure_tiny_model(str(tmp / "tiny"))
        larger = _larger_model(tiny, tmp / "larger", opts.resume_hidden, opts.resume_layers)
        table = Table(title="checkpoint write: model only vs resume point (median of writes)")
        for col in ("model", "type", "what", "write s", "MiB", "x time", "x size"):
            table.add_column(col, justify="right", no_wrap=True)
        for name, model in (
            ("tiny", tiny),
            (f"h{opts.resume_hidden}x{opts.resume_layers}", larger),
        ):
            for tt in ("sft", "efficient_sft"):  # full weights, a LoRA adapter
                costs = _write_costs(tmp, model, tt, opts.resume_saves)
                base_s, base_b = costs["model only"]
                for what, (sec, size) in costs.items():
                    table.add_row(
                        name,
                        tt,
                        what,
                        f"{sec:.3f}",
                        f"{size / 2**20:.2f}",
                        f"{sec / base_s:.2f}",
                        f"{size / base_b:.2f}",
                    )
        console.print(table)
        times = _loss_to_training(tmp, opts.resume_kills)
    lat = Table(title="worker SIGKILLed -> training again (dashtune-tiny sft, local executor)")
    lat.add_column("from the kill to")
    lat.add_column("seconds (median)", justify="right")
    lat.add_column("runs", justify="right")
    for what, label in (
        ("requeued", "job QUEUING again (scheduler saw the exit)"),
        ("running", "new worker RUNNING"),
        ("training", "first step after the resume point logged"),
    ):
        lat.add_row(label, f"{statistics.median(times[what]):.2f}", str(len(times[what])))
    lat.add_row(
        "baseline: a fresh job, RUNNING -> first step logged",
        f"{statistics.median(times['fresh']):.2f}",
        "1",
    )
    console.print(lat)
