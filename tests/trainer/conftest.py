"""Fixtures for the trainer tests: the tiny model, small JSONL tasks, a recording reporter.

The task is "reverse a word" (feasibility doc): a random 100k-parameter model learns it
fast enough that a loss drop shows within a few dozen steps on one CPU thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from dashtune.trainer.spec import TrainSpec
from tests.trainer.tasks import ROWS, hyper_parameters, words, write_jsonl

# No hub: huggingface_hub reads these when transformers is first imported (in a test).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@dataclass
class RecordingReporter:
    """A Reporter that keeps everything, for assertions."""

    lines: list[str] = field(default_factory=list)
    metric_calls: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    progress_calls: list[tuple[int, int, float | None]] = field(default_factory=list)
    checkpoints: list[tuple[str, int, str, dict[str, float]]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    on_progress: Callable[[int], None] | None = None

    def log(self, line: str) -> None:
        self.lines.append(line)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.metric_calls.append((step, dict(values)))

    def progress(self, step: int, total_steps: int, eta_seconds: float | None) -> None:
        self.progress_calls.append((step, total_steps, eta_seconds))
        if self.on_progress:
            self.on_progress(step)

    def checkpoint(self, name: str, step: int, path: str, metrics: dict[str, float]) -> None:
        self.checkpoints.append((name, step, path, dict(metrics)))

    def checkpoint_removed(self, name: str) -> None:
        self.removed.append(name)

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(step, v[key]) for step, v in self.metric_calls if key in v]


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    from dashtune.trainer.tiny import ensure_tiny_model

    return ensure_tiny_model(str(tmp_path_factory.mktemp("models") / "dashtune-tiny"))


@pytest.fixture(scope="session")
def make_spec(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: str
) -> Callable[..., TrainSpec]:
    """A spec on generated data in a fresh dir: `make_spec("sft", n=64, rows=None, **hp)`."""

    def make(
        training_type: str,
        n: int = 64,
        rows: list[dict[str, Any]] | None = None,
        model_path: str | None = None,
        adapter_path: str | None = None,
        **hp: Any,
    ) -> TrainSpec:
        root = tmp_path_factory.mktemp(training_type)
        data = rows if rows is not None else [ROWS[training_type](w) for w in words(n, 0)]
        return TrainSpec(
            job_id=f"ft-{root.name}",
            training_type=training_type,
            model_path=model_path or tiny_model,
            adapter_path=adapter_path,
            training_files=[write_jsonl(root / "train.jsonl", data)],
            validation_files=[],
            hyper_parameters=hyper_parameters(training_type, **hp),
            output_dir=str(root / "job"),
            stop_file=str(root / "STOP"),
        )

    return make


@dataclass
class Job:
    spec: TrainSpec
    result: Any  # TrainResult
    reporter: RecordingReporter


def run_job(spec: TrainSpec) -> Job:
    from dashtune.trainer.run import train

    reporter = RecordingReporter()
    return Job(spec, train(spec, reporter), reporter)


@pytest.fixture(scope="session")
def train_job() -> Callable[[TrainSpec], Job]:
    """Run `train(spec)` with a recording reporter."""
    return run_job


@pytest.fixture(scope="session")
def sft_job(make_spec: Callable[..., TrainSpec]) -> Job:
    """A full SFT run whose output the continuation tests build on."""
    long_rows = [ROWS["sft"]("x" * 80) for _ in range(6)]  # dropped: longer than max_length
    return run_job(make_spec("sft", rows=[ROWS["sft"](w) for w in words(64, 0)] + long_rows))


@pytest.fixture(scope="session")
def lora_job(make_spec: Callable[..., TrainSpec]) -> Job:
    """An efficient_sft (LoRA) run whose adapter the continuation tests build on."""
    return run_job(make_spec("efficient_sft", n=96))
