"""Small generated JSONL tasks and resolved hyper-parameters for the trainer tests."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

LR = {"sft": 3e-3, "cpt": 3e-3, "efficient_sft": 5e-3, "dpo_full": 1e-3, "dpo_lora": 5e-3}


def words(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 5))) for _ in range(n)]


def sft_row(word: str, weight: float | None = None) -> dict[str, Any]:
    reply: dict[str, Any] = {"role": "assistant", "content": word[::-1]}
    if weight is not None:
        reply["loss_weight"] = weight
    return {
        "messages": [
            {"role": "system", "content": "You reverse words."},
            {"role": "user", "content": f"reverse {word}"},
            reply,
        ]
    }


def dpo_row(word: str) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": f"reverse {word}"}],
        "chosen": {"role": "assistant", "content": word[::-1]},
        "rejected": word,
    }


def cpt_row(word: str) -> dict[str, Any]:
    return {"text": f"the word {word} reversed is {word[::-1]}"}


ROWS: dict[str, Callable[[str], dict[str, Any]]] = {
    "sft": sft_row,
    "efficient_sft": sft_row,
    "cpt": cpt_row,
    "dpo_full": dpo_row,
    "dpo_lora": dpo_row,
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def hyper_parameters(training_type: str, **overrides: Any) -> dict[str, Any]:
    """Resolved hyper-parameters (every key present) sized for a seconds-long CPU run."""
    hp: dict[str, Any] = {
        "n_epochs": 2,
        "batch_size": 8,
        "learning_rate": LR[training_type],
        "max_length": 64,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "weight_decay": 0.0,
        "split": 0.8,
        "max_split_val_dataset_sample": 16,
        "eval_steps": 10,
        "logging_steps": 5,
        "save_strategy": "steps",
        "save_steps": 5,
        "save_total_limit": 1,
        "prompt_loss": 0.0,
        "seed": 42,
        "gradient_accumulation_steps": 1,
        "max_grad_norm": 1.0,
        "lora_rank": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "target_modules": "all-linear",
        "dpo_beta": 0.1,
        "packing": True,  # the API's default (domain.hyperparams)
    }
    hp.update(overrides)
    return hp


def save_random_qwen2(tok: Any, path: Path, hidden: int, layers: int, **config: Any) -> str:
    """A seeded random-init Qwen2 on `tok` (intermediate 2x hidden, 4 heads over 2 KV heads
    unless `config` says otherwise), saved with the tokenizer: a model wider than
    dashtune-tiny, or one with a sliding window, built here with no download."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        **{
            "vocab_size": len(tok),
            "hidden_size": hidden,
            "intermediate_size": 2 * hidden,
            "num_hidden_layers": layers,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            **config,
        }
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)
