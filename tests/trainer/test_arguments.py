"""Every hyper-parameter of §3.5 reaches the trainer's configuration (behaviour of the
data-side ones, split, max_length, prompt_loss and loss weights, is tested in test_data,
test_train and test_weighted_loss)."""

from __future__ import annotations

from dashtune.trainer.arguments import common_arguments, total_steps
from dashtune.trainer.model import lora_config
from tests.trainer.tasks import hyper_parameters


def test_schedule_eval_save_and_optimizer_keys_map_to_trainer_arguments(tmp_path) -> None:  # type: ignore[no-untyped-def]
    hp = hyper_parameters(
        "sft",
        n_epochs=3,
        batch_size=4,
        learning_rate=2e-3,
        max_length=77,
        lr_scheduler_type="linear",
        warmup_ratio=0.25,
        weight_decay=0.03,
        eval_steps=7,
        logging_steps=3,
        save_strategy="steps",
        save_steps=11,
        save_total_limit=4,
        seed=123,
        gradient_accumulation_steps=2,
        max_grad_norm=0.5,
    )
    args = common_arguments(str(tmp_path), hp, n_train=40, has_eval=True)
    steps = total_steps(40, hp)
    assert steps == 15  # ceil(40/4)=10 batches, /2 accumulation = 5 steps, x 3 epochs
    expected = {
        "num_train_epochs": 3,
        "per_device_train_batch_size": 4,
        "learning_rate": 2e-3,
        "max_length": 77,
        "lr_scheduler_type": "linear",
        "warmup_steps": 4,
        "weight_decay": 0.03,
        "eval_steps": 7,
        "logging_steps": 3,
        "save_strategy": "steps",
        "save_steps": 11,
        "save_total_limit": 4,
        "seed": 123,
        "gradient_accumulation_steps": 2,
        "max_grad_norm": 0.5,
        "eval_strategy": "steps",
    }
    assert {k: args[k] for k in expected} == expected
    assert common_arguments(str(tmp_path), hp, 40, has_eval=False)["eval_strategy"] == "no"


def test_lora_keys_map_to_the_adapter_config() -> None:
    hp = hyper_parameters(
        "efficient_sft",
        lora_rank=16,
        lora_alpha=8,
        lora_dropout=0.2,
        target_modules=["q_proj", "v_proj"],
    )
    cfg = lora_config(hp)
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (16, 8, 0.2)
    assert set(cfg.target_modules) == {"q_proj", "v_proj"}
