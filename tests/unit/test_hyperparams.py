from __future__ import annotations

import pytest

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.hyperparams import resolve
from dashtune.domain.training import TrainingType


def test_defaults_per_training_type() -> None:
    sft = resolve({}, TrainingType.SFT)
    assert sft["learning_rate"] == 1e-5 and sft["n_epochs"] == 1 and sft["batch_size"] == 8
    assert "lora_rank" not in sft and "dpo_beta" not in sft
    lora = resolve(None, TrainingType.EFFICIENT_SFT)
    assert lora["learning_rate"] == 1e-4 and lora["lora_rank"] == 8 and lora["lora_alpha"] == 32
    dpo = resolve({}, TrainingType.DPO_LORA)
    assert dpo["dpo_beta"] == 0.1 and dpo["lora_rank"] == 8


def test_numeric_strings_and_case() -> None:
    got = resolve(
        {"learning_rate": "1.6e-5", "n_epochs": "3", "lr_scheduler_type": "COSINE"},
        TrainingType.SFT,
    )
    assert got["learning_rate"] == 1.6e-5 and got["n_epochs"] == 3
    assert got["lr_scheduler_type"] == "cosine"


@pytest.mark.parametrize(
    ("declared", "word"),
    [
        ({"n_epoch": 1}, "n_epoch"),
        ({"n_epochs": 101}, "n_epochs"),
        ({"n_epochs": 1.5}, "integer"),
        ({"batch_size": True}, "batch_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"split": 0}, "split"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"save_strategy": "never"}, "save_strategy"),
        ({"lora_rank": 0}, "lora_rank"),
        ({"prompt_loss": 2}, "prompt_loss"),
        ({"max_length": 8}, "max_length"),
        ({"learning_rate": "nan"}, "learning_rate"),
        ({"packing": "yes"}, "packing"),
        ({"packing": 1}, "packing"),
        ({"packing": "auto"}, "packing"),  # packing has no "auto": it is on unless turned off
        ({"gradient_checkpointing": "sometimes"}, "gradient_checkpointing"),
        ({"bf16": 0}, "bf16"),
        ({"use_liger_kernel": []}, "use_liger_kernel"),
        ({"attn_implementation": "flash"}, "attn_implementation"),
    ],
)
def test_rejections_name_the_key(declared: dict, word: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidParameter, match=word):
        resolve(declared, TrainingType.EFFICIENT_SFT)


def test_not_applied_keys_are_accepted() -> None:
    got = resolve({"data_augmentation": True, "freeze_vit": True}, TrainingType.SFT)
    assert "data_augmentation" not in got


def test_keys_that_do_not_apply_to_the_training_type_are_named() -> None:
    from dashtune.domain.hyperparams import inapplicable
    from dashtune.domain.training import TrainingType

    declared = {"lora_rank": 4, "dpo_beta": 0.2, "prompt_loss": 0.1, "n_epochs": 2}
    assert inapplicable(declared, TrainingType.SFT) == [
        "dpo_beta (applies to dpo_full, dpo_lora only)",
        "lora_rank (applies to efficient_sft, dpo_lora only)",
    ]
    assert inapplicable(declared, TrainingType.DPO_LORA) == [
        "prompt_loss (applies to sft, efficient_sft only)"
    ]
    assert inapplicable({"n_epochs": 1}, TrainingType.CPT) == []


def test_packing_and_hardware_settings() -> None:
    sft = resolve({}, TrainingType.SFT)
    assert sft["packing"] is True
    assert sft["bf16"] == sft["gradient_checkpointing"] == sft["use_liger_kernel"] == "auto"
    assert sft["attn_implementation"] == "auto"
    got = resolve(
        {"packing": "False", "gradient_checkpointing": True, "bf16": "auto"}, TrainingType.CPT
    )
    assert got["packing"] is False and got["gradient_checkpointing"] is True
    assert got["bf16"] == "auto"
    assert resolve({"attn_implementation": "EAGER"}, TrainingType.SFT)["attn_implementation"] == (
        "eager"
    )
    assert "packing" not in resolve({}, TrainingType.DPO_FULL)  # DPO batches its own pairs
