"""What the scheduler hands a training worker, and how the worker reports back.

Imported by the scheduler, so it must not import torch: the spec crosses the process
boundary as JSON (`to_json` / `from_json`) and the reporter is a narrow protocol the
scheduler implements on top of the store.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

TRAINING_TYPES = ("sft", "efficient_sft", "dpo_full", "dpo_lora", "cpt")
LORA_TYPES = frozenset({"efficient_sft", "dpo_lora"})
DPO_TYPES = frozenset({"dpo_full", "dpo_lora"})


@dataclass
class TrainSpec:
    """One job's training run; `hyper_parameters` are the resolved values (domain.hyperparams)."""

    job_id: str
    training_type: str  # "sft" | "efficient_sft" | "dpo_full" | "dpo_lora" | "cpt"
    model_path: str  # dir of a HF causal LM: a base model, or a full fine-tune's output
    adapter_path: str | None  # continuing from a LoRA job: its adapter dir (model_path is its base)
    training_files: list[str]
    validation_files: list[str]
    hyper_parameters: dict[str, Any]
    output_dir: str  # checkpoints in output_dir/checkpoints, the final model in output_dir/final
    stop_file: str  # cooperative cancel: stop at the next step boundary once this exists
    # Pause: save a resume point at the next step boundary and stop, once this exists.
    pause_file: str = ""
    resume_from: str | None = None  # a resume point (checkpoint dir) to continue from

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> TrainSpec:
        return cls(**json.loads(s))

    @property
    def is_lora(self) -> bool:
        return self.training_type in LORA_TYPES

    @property
    def is_dpo(self) -> bool:
        return self.training_type in DPO_TYPES


class Reporter(Protocol):
    """Where the trainer sends what a user sees: logs, metrics, progress and checkpoints."""

    def log(self, line: str) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def progress(self, step: int, total_steps: int, eta_seconds: float | None) -> None: ...

    def checkpoint(self, name: str, step: int, path: str, metrics: dict[str, float]) -> None: ...

    def checkpoint_removed(self, name: str) -> None: ...


@dataclass
class TrainResult:
    usage_tokens: int  # non-padding tokens through the training forward passes, all steps
    final_path: str  # output_dir/final
    canceled: bool  # stopped because stop_file appeared
    steps: int = 0  # optimizer steps done
    paused: bool = False  # stopped at a resume point because pause_file appeared
