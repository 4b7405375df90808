"""Hyper-parameter schema, validation and defaults (§3.5).

The job echoes what the caller declared (as sent) in `hyper_parameters`; the trainer gets
`resolve(...)`, every key present and typed. One table drives both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.training import LORA_TYPES, TrainingType


@dataclass(frozen=True)
class Param:
    kind: type  # int, float, str or list
    default: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None


SCHEDULERS = ("cosine", "linear", "constant", "inverse_sqrt")

SCHEMA: dict[str, Param] = {
    "n_epochs": Param(int, 1, 1, 100),
    "batch_size": Param(int, 8, 1, 1024),
    "learning_rate": Param(float, 1e-5, 0, None, lo_open=True),
    "max_length": Param(int, 2048, 16, 131072),
    "lr_scheduler_type": Param(str, "cosine", choices=SCHEDULERS),
    "warmup_ratio": Param(float, 0.05, 0, 1),
    "weight_decay": Param(float, 0.1, 0, None),
    "split": Param(float, 0.8, 0, 1, lo_open=True, hi_open=True),
    "max_split_val_dataset_sample": Param(int, 1000, 1, None),
    "eval_steps": Param(int, 50, 1, None),
    "logging_steps": Param(int, 5, 1, None),
    "save_strategy": Param(str, "epoch", choices=("epoch", "steps")),
    "save_steps": Param(int, 50, 1, None),
    "save_total_limit": Param(int, 1, 1, 100),
    "prompt_loss": Param(float, 0.0, 0, 1),
    "seed": Param(int, 42, 0, 2**32 - 1),
    "gradient_accumulation_steps": Param(int, 1, 1, 1024),
    "max_grad_norm": Param(float, 1.0, 0, None),
    "lora_rank": Param(int, 8, 1, 256),
    "lora_alpha": Param(int, 32, 1, 4096),
    "lora_dropout": Param(float, 0.1, 0, 1),
    "target_modules": Param(list, "all-linear"),
    "dpo_beta": Param(float, 0.1, 0, None, lo_open=True),
}

LORA_KEYS = frozenset({"lora_rank", "lora_alpha", "lora_dropout", "target_modules"})

# Documented cloud keys that do not apply to a self-hosted text trainer: accepted, echoed,
# and logged as "not applied".
NOT_APPLIED = frozenset(
    {"data_augmentation", "augmentation_types", "augmentation_ratio", "freeze_vit"}
)


def _number(key: str, value: Any, kind: type) -> float | int:
    if isinstance(value, bool):
        raise InvalidParameter(f"hyper_parameters.{key} must be a number, got {value!r}.")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise InvalidParameter(
                f"hyper_parameters.{key} must be a number, got {value!r}."
            ) from None
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidParameter(f"hyper_parameters.{key} must be a number, got {value!r}.")
    if kind is int:
        if float(value) != int(value):
            raise InvalidParameter(f"hyper_parameters.{key} must be an integer, got {value!r}.")
        return int(value)
    return float(value)


def _check_range(key: str, value: float, p: Param) -> None:
    too_low = p.lo is not None and (value <= p.lo if p.lo_open else value < p.lo)
    too_high = p.hi is not None and (value >= p.hi if p.hi_open else value > p.hi)
    if too_low or too_high:
        lo = "" if p.lo is None else ("(" if p.lo_open else "[") + f"{p.lo:g}"
        hi = "" if p.hi is None else f"{p.hi:g}" + (")" if p.hi_open else "]")
        bound = f"{lo or '(-inf'}, {hi or 'inf)'}"
        raise InvalidParameter(f"hyper_parameters.{key}={value!r} is out of range {bound}.")


def _coerce(key: str, value: Any, p: Param) -> Any:
    if p.kind in (int, float):
        number = _number(key, value, p.kind)
        _check_range(key, number, p)
        return number
    if p.kind is list:  # target_modules: "all-linear" or a list of module names
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
            return value
        raise InvalidParameter(
            f"hyper_parameters.{key} must be 'all-linear' or a list of module names."
        )
    if not isinstance(value, str):
        raise InvalidParameter(f"hyper_parameters.{key} must be a string, got {value!r}.")
    lowered = value.strip().lower()
    if p.choices and lowered not in p.choices:
        raise InvalidParameter(
            f"hyper_parameters.{key}={value!r} is not supported; use one of: "
            + ", ".join(p.choices)
            + "."
        )
    return lowered


def resolve(declared: Any, training_type: TrainingType) -> dict[str, Any]:
    """Validate what the caller declared and fill the defaults for `training_type`."""
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise InvalidParameter("hyper_parameters must be a JSON object.")
    resolved: dict[str, Any] = {k: p.default for k, p in SCHEMA.items()}
    if training_type is TrainingType.EFFICIENT_SFT:
        resolved["learning_rate"] = 1e-4
    for key, value in declared.items():
        if key in NOT_APPLIED:
            continue
        param = SCHEMA.get(key)
        if param is None:
            raise InvalidParameter(
                f"hyper_parameters.{key} is not a known hyper-parameter "
                "(check the spelling, e.g. n_epochs)."
            )
        if value is None:
            continue
        resolved[key] = _coerce(key, value, param)
    if training_type not in LORA_TYPES:
        for key in LORA_KEYS:
            resolved.pop(key, None)
    if training_type not in (TrainingType.DPO_FULL, TrainingType.DPO_LORA):
        resolved.pop("dpo_beta", None)
    return resolved


def not_applied(declared: dict[str, Any] | None) -> list[str]:
    """Declared keys that are accepted for compatibility but have no effect here."""
    return sorted(k for k in (declared or {}) if k in NOT_APPLIED)
