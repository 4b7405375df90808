"""Resolved hyper-parameters -> trainer arguments shared by the SFT, CPT and DPO runs.

Each hyper-parameter of §3.5 maps to one argument here (LoRA keys in model.py, prompt_loss
and loss_weight in sft.py, dpo_beta in dpo.py, max_length and split in data.py).
"""

from __future__ import annotations

import math
import os
from typing import Any

from dashtune.trainer.hardware import Hardware

# DashScope's names -> transformers' scheduler names; "constant" honours warmup too.
SCHEDULERS = {
    "cosine": "cosine",
    "linear": "linear",
    "constant": "constant_with_warmup",
    "inverse_sqrt": "inverse_sqrt",
}


def world_size() -> int:
    """Data-parallel processes of this run (1 unless launched by torchrun or Ray Train)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def total_steps(n_train: int, hp: dict[str, Any]) -> int:
    """Optimizer steps of the run, computed as transformers.Trainer does (no drop_last)."""
    batches = math.ceil(n_train / hp["batch_size"])
    per_epoch = max(math.ceil(batches / hp["gradient_accumulation_steps"]), 1)
    return per_epoch * hp["n_epochs"]


def common_arguments(
    output_dir: str, hp: dict[str, Any], n_train: int, has_eval: bool, hw: Hardware | None = None
) -> dict[str, Any]:
    """Keyword arguments for SFTConfig / DPOConfig: schedule, logging, eval, save, device,
    and the hardware settings of `hw` (hardware.py; CPU defaults when None)."""
    import torch

    cuda = torch.cuda.is_available()
    if hw is None:
        hw = Hardware(cuda, bf16=False, attn_implementation="sdpa", use_liger_kernel=False)
    warmup = math.ceil(total_steps(n_train, hp) * hp["warmup_ratio"])
    # batch_size is the global batch: data-parallel ranks split it (hyperparams checks
    # that it divides); WORLD_SIZE is set by torchrun and Ray Train.
    per_device = max(1, hp["batch_size"] // world_size())
    return {
        "output_dir": os.path.join(output_dir, "checkpoints"),
        "num_train_epochs": hp["n_epochs"],
        "per_device_train_batch_size": per_device,
        "per_device_eval_batch_size": per_device,
        "gradient_accumulation_steps": hp["gradient_accumulation_steps"],
        "learning_rate": hp["learning_rate"],
        "lr_scheduler_type": SCHEDULERS[hp["lr_scheduler_type"]],
        "warmup_steps": warmup,
        "weight_decay": hp["weight_decay"],
        "max_grad_norm": hp["max_grad_norm"],
        "seed": hp["seed"],
        "data_seed": hp["seed"],
        "max_length": hp["max_length"],
        "logging_strategy": "steps",
        "logging_steps": hp["logging_steps"],
        "eval_strategy": "steps" if has_eval else "no",
        "eval_steps": hp["eval_steps"],
        "save_strategy": hp["save_strategy"],
        "save_steps": hp["save_steps"],
        "save_total_limit": hp["save_total_limit"],
        # Each checkpoint is a resume point too: optimizer, scheduler and RNG state beside
        # the model (dropped when the job ends; exports copy only the model).
        "save_only_model": False,
        "include_num_input_tokens_seen": "non_padding",
        "use_cpu": not cuda,
        "bf16": hw.bf16,
        # TRL's SFTConfig defaults this to True; hardware.with_checkpointing decides.
        "gradient_checkpointing": hw.gradient_checkpointing,
        "use_liger_kernel": hw.use_liger_kernel,
        "dataloader_pin_memory": cuda,
        "report_to": "none",
        "disable_tqdm": True,
    }
