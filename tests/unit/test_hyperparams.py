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
    ],
)
def test_rejections_name_the_key(declared: dict, word: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidParameter, match=word):
        resolve(declared, TrainingType.EFFICIENT_SFT)


def test_not_applied_keys_are_accepted() -> None:
    got = resolve({"data_augmentation": True, "freeze_vit": True}, TrainingType.SFT)
    assert "data_augmentation" not in got
