"""Training types and what each one needs."""

from __future__ import annotations

from enum import StrEnum


class TrainingType(StrEnum):
    SFT = "sft"
    EFFICIENT_SFT = "efficient_sft"
    DPO_FULL = "dpo_full"
    DPO_LORA = "dpo_lora"
    CPT = "cpt"


LORA_TYPES = frozenset({TrainingType.EFFICIENT_SFT, TrainingType.DPO_LORA})
DPO_TYPES = frozenset({TrainingType.DPO_FULL, TrainingType.DPO_LORA})


def parse_training_type(value: object) -> TrainingType:
    """Accept the documented spellings (case-insensitive); anything else names the choices."""
    from dashtune.domain.errors import InvalidParameter

    if value is None:
        return TrainingType.SFT
    if isinstance(value, str):
        try:
            return TrainingType(value.strip().lower())
        except ValueError:
            pass
    choices = ", ".join(t.value for t in TrainingType)
    raise InvalidParameter(f"training_type {value!r} is not supported; use one of: {choices}.")
