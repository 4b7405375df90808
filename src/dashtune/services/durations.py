"""How long a job of a model will train, from the earlier jobs of that model here.

A job's wall time (RUNNING to end) is a start-up that does not grow with the data
(starting the worker, importing the libraries, loading the model, the first and last
evaluation, saving the result) plus its tokens at the model's training speed. One rate,
tokens over wall time, makes a job twice the size take twice the start-up too: so the
speed is the trainer's own, logged with each training log line and timed around the
optimizer steps alone (`tokens_per_second`, on a monotonic clock: the stored times are
whole seconds), and the start-up is the rest of each job's wall time.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from dashtune.domain.training import TrainingType
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job, JobMetric

HISTORY = 5  # latest jobs whose speed the estimate uses


@dataclass
class Timed:
    """One earlier job: its wall time, tokens, and the seconds its optimizer steps took."""

    job_id: str
    training_type: str
    seconds: float
    tokens: int
    loop_seconds: float  # 0 when it logged no speed


def _loop_seconds(tokens: int, rates: list[float]) -> float:
    """Seconds of training steps for `tokens` at the logged speeds: each log line covers
    the same number of steps, so the job's speed is their harmonic mean."""
    rates = [r for r in rates if r > 0]
    return tokens / statistics.harmonic_mean(rates) if rates else 0.0


def measured(rt: Runtime, base_model: str, kind: TrainingType) -> list[Timed]:
    """The latest succeeded, never retried jobs of the model (of `kind` when there are)."""
    with rt.db.read() as s:
        done = s.scalars(
            select(Job)
            .where(Job.base_model == base_model, Job.status == "SUCCEEDED", Job.usage > 0)
            .order_by(Job.end_time.desc())
            .limit(50)
        ).all()
        same = [j for j in done if j.training_type == kind.value] or list(done)
        jobs = [
            j
            for j in same
            if j.start_time and j.end_time and j.end_time > j.start_time and j.attempts <= 1
        ][:HISTORY]
        rates: dict[str, list[float]] = {j.id: [] for j in jobs}
        rows = s.execute(
            select(JobMetric.job_id, JobMetric.values).where(JobMetric.job_id.in_(list(rates)))
        )
        for job_id, values in rows:
            if "loss" in (values or {}):  # a training log line, not an evaluation
                rates[job_id].append(float(values.get("tokens_per_second") or 0.0))
    out = []
    for j in jobs:
        assert j.start_time is not None and j.end_time is not None
        seconds = (j.end_time - j.start_time).total_seconds()
        loop = _loop_seconds(j.usage, rates[j.id])
        out.append(Timed(j.id, j.training_type, seconds, j.usage, loop))
    return out


def estimate(rt: Runtime, base_model: str, kind: TrainingType, tokens: int) -> dict[str, Any]:
    """The `duration` of an estimate that trains `tokens` tokens (epochs included)."""
    timed = measured(rt, base_model, kind)
    if not timed:
        return {
            "seconds": None,
            "reason": f"no earlier succeeded job of {base_model} on this deployment to measure",
        }
    looped = [t for t in timed if t.loop_seconds > 0]
    if looped:
        rate = sum(t.tokens for t in looped) / sum(t.loop_seconds for t in looped)
        startup = statistics.median(max(0.0, t.seconds - t.loop_seconds) for t in looped)
    else:  # no speed logged: the whole wall time is the speed
        rate = sum(t.tokens for t in timed) / sum(t.seconds for t in timed)
        startup = 0.0
    return {
        "seconds": round(startup + tokens / rate, 1),
        "tokens_per_second": rate,
        "startup_seconds": round(startup, 1),
        "jobs": [t.job_id for t in timed],
        "same_training_type": timed[0].training_type == kind.value,
    }
