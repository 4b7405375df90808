"""`jobs watch`: a live rich progress bar fed by the job object until the job ends.

The job object carries everything the bar shows (`progress`, `eta_seconds` and the
latest `metrics`), so watching is one GET per interval: no event stream to keep open,
and a watcher that reconnects after a network blip loses nothing.
"""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from dashtune.client.errors import ApiError
from dashtune.client.http import Client
from dashtune.client.render import duration, err_console, status_text
from dashtune.domain.states import TERMINAL

# Transient network trouble a watcher rides out before giving up.
MAX_MISSED_POLLS = 10


def describe(job: dict[str, Any]) -> str:
    """The text right of the bar: step, loss, eval loss, tokens/s and ETA."""
    m = job.get("metrics") or {}
    parts = []
    step = m.get("step")
    if step is not None:
        total = job.get("total_steps")  # the trainer's max_steps
        parts.append(f"step {step}/{total}" if total else f"step {step}")
    if "loss" in m:
        parts.append(f"loss {m['loss']:.4f}")
    if "eval_loss" in m:
        at = f" @{m['eval_step']}" if m.get("eval_step") not in (None, step) else ""
        parts.append(f"eval {m['eval_loss']:.4f}{at}")
    if m.get("tokens_per_second"):
        parts.append(f"{m['tokens_per_second']:,.0f} tok/s")
    eta = job.get("eta_seconds")
    if eta is not None and job.get("status") == "RUNNING":
        parts.append(f"ETA {duration(eta)}")
    return "  ".join(parts)


def watch(client: Client, job_id: str, interval: float = 1.0) -> dict[str, Any]:
    """Show the job's progress on stderr until it reaches a terminal state; the final job."""
    job = client.get_job(job_id)
    missed = 0
    columns = (
        TextColumn("[bold]{task.fields[job_id]}[/bold]"),
        TextColumn("{task.fields[status]}"),
        BarColumn(bar_width=30),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        task = bar.add_task("", total=1.0, job_id=job_id, status="", detail="")
        while True:
            bar.update(
                task,
                completed=job.get("progress") or 0.0,
                status=status_text(job.get("status")),
                detail=describe(job),
            )
            if job.get("status") in TERMINAL:
                return job
            time.sleep(interval)
            try:
                job = client.get_job(job_id)
                missed = 0
            except ApiError as exc:
                # A restarting server or a dropped connection is not the job's failure.
                transient = exc.status is None or exc.status >= 500
                if not transient or missed >= MAX_MISSED_POLLS:
                    raise
                missed += 1
