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
    kind: type  # int, float, str, bool or list; a bool whose default is "auto" takes "auto"
    default: Any
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    choices: tuple[str, ...] | None = None


SCHEDULERS = ("cosine", "linear", "constant", "inverse_sqrt")
ATTENTION = ("auto", "sdpa", "sdpa_varlen", "eager", "flash_attention_2")

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
    # Resources (issue 8): data-parallel workers, and GPUs each; None = the executor's
    # default (1 where it has GPUs, else 0), filled in at create (services.capacity).
    "num_workers": Param(int, 1, 1, 64),
    "gpus_per_worker": Param(int, None, 0, 16),
    # Speed (issue 10): packed, padding-free batches, and the hardware settings that
    # trainer/hardware.py picks when left at "auto" (the job log says what it chose and why).
    "packing": Param(bool, True),
    "bf16": Param(bool, "auto"),
    "gradient_checkpointing": Param(bool, "auto"),
    "attn_implementation": Param(str, "auto", choices=ATTENTION),
    "use_liger_kernel": Param(bool, "auto"),
}

RESOURCE_KEYS = frozenset({"num_workers", "gpus_per_worker"})

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
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        # float() of a 400-digit integer overflows; no parameter takes such a value.
        raise InvalidParameter(
            f"hyper_parameters.{key} is out of range (a {len(str(value))}-digit integer)."
        )
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


def _flag(key: str, value: Any, p: Param) -> bool | str:
    """A JSON boolean or the string "true"/"false" (numeric strings are accepted elsewhere,
    so strings are here too); "auto" where the default is "auto"."""
    if isinstance(value, bool):
        return value
    word = value.strip().lower() if isinstance(value, str) else None
    if word in ("true", "false"):
        return word == "true"
    if word == "auto" and p.default == "auto":
        return word
    allowed = "true, false" + (" or auto" if p.default == "auto" else "")
    raise InvalidParameter(f"hyper_parameters.{key} must be {allowed}, got {value!r}.")


def _coerce(key: str, value: Any, p: Param) -> Any:
    if p.kind is bool:
        return _flag(key, value, p)
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


def resolve(
    declared: Any, training_type: TrainingType, model_defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Validate what the caller declared and fill the defaults for `training_type`
    (and the catalog's defaults for the model, e.g. num_workers)."""
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise InvalidParameter("hyper_parameters must be a JSON object.")
    resolved: dict[str, Any] = {k: p.default for k, p in SCHEMA.items()}
    if training_type is TrainingType.EFFICIENT_SFT:
        resolved["learning_rate"] = 1e-4
    for key, value in (model_defaults or {}).items():
        if key in SCHEMA:
            resolved[key] = _coerce(key, value, SCHEMA[key])
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
    if resolved["batch_size"] % resolved["num_workers"]:
        raise InvalidParameter(
            f"hyper_parameters.batch_size={resolved['batch_size']} is the global batch and "
            f"must divide among num_workers={resolved['num_workers']} data-parallel workers."
        )
    if training_type not in LORA_TYPES:
        for key in LORA_KEYS:
            resolved.pop(key, None)
    if training_type not in (TrainingType.DPO_FULL, TrainingType.DPO_LORA):
        resolved.pop("dpo_beta", None)
    else:
        resolved.pop("packing", None)  # DPO pairs are batched by TRL's own collator
    return resolved


# Keys that only some training types use; every other key applies to all five.
APPLIES_TO: dict[str, frozenset[TrainingType]] = {
    **{k: LORA_TYPES for k in LORA_KEYS},
    "dpo_beta": frozenset({TrainingType.DPO_FULL, TrainingType.DPO_LORA}),
    "prompt_loss": frozenset({TrainingType.SFT, TrainingType.EFFICIENT_SFT}),
    "packing": frozenset({TrainingType.SFT, TrainingType.EFFICIENT_SFT, TrainingType.CPT}),
}


def inapplicable(declared: dict[str, Any] | None, training_type: TrainingType) -> list[str]:
    """Declared keys that `training_type` does not use, each with the types that do."""
    out = []
    for key in sorted(declared or {}):
        types = APPLIES_TO.get(key)
        if types is not None and training_type not in types:
            names = ", ".join(t.value for t in TrainingType if t in types)
            out.append(f"{key} (applies to {names} only)")
    return out


def not_applied(declared: dict[str, Any] | None) -> list[str]:
    """Declared keys that are accepted for compatibility but have no effect here."""
    return sorted(k for k in (declared or {}) if k in NOT_APPLIED)
