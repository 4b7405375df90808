"""Loading what a job trains: the tokenizer, the model and, for LoRA, the adapter.

Continuing a job is decided here: a LoRA job on top of a LoRA output keeps training that
adapter; a full job on top of a LoRA output trains the merged weights.
"""

from __future__ import annotations

import os
from typing import Any

from dashtune.trainer.errors import MODEL_LOAD_ERROR, TrainingError
from dashtune.trainer.spec import TrainSpec


def load_tokenizer(model_path: str) -> Any:
    """The tokenizer saved with the model; it must have a chat template and a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path)
    except Exception as exc:  # transformers raises many types for a bad dir
        raise TrainingError(
            MODEL_LOAD_ERROR, f"cannot load the tokenizer of the model at {model_path}: {exc}"
        ) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: TrainSpec, dtype: str = "float32", attn: str = "sdpa") -> Any:
    """The model to train: base weights, plus the earlier job's adapter when continuing one.

    `dtype` and `attn` come from hardware.choose (bf16 only for a LoRA job's frozen base).
    """
    from transformers import AutoModelForCausalLM

    path = os.path.abspath(spec.model_path)  # adapter_config keeps it: must not depend on cwd
    if attn == "sdpa_varlen":
        from dashtune.trainer.varlen_attention import register

        register()
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    except Exception as exc:
        raise TrainingError(MODEL_LOAD_ERROR, f"cannot load the model at {path}: {exc}") from None
    if spec.adapter_path is None:
        return model

    from peft import PeftModel

    adapter = os.path.abspath(spec.adapter_path)
    try:
        peft_model = PeftModel.from_pretrained(model, adapter, is_trainable=spec.is_lora)
    except Exception as exc:
        raise TrainingError(
            MODEL_LOAD_ERROR, f"cannot load the adapter at {adapter} onto {path}: {exc}"
        ) from None
    if spec.is_lora:
        peft_model.peft_config["default"].base_model_name_or_path = path
        return peft_model
    merged = peft_model.merge_and_unload()
    # PEFT froze the base when it wrapped it; a full job trains every merged weight. (Hidden
    # until issue 10: TRL's default gradient checkpointing made the frozen graph backward.)
    merged.requires_grad_(True)
    return merged


def lora_config(hp: dict[str, Any]) -> Any:
    """The LoRA adapter a new efficient job trains, from the resolved hyper-parameters."""
    from peft import LoraConfig

    return LoraConfig(
        r=hp["lora_rank"],
        lora_alpha=hp["lora_alpha"],
        lora_dropout=hp["lora_dropout"],
        target_modules=hp["target_modules"],
        task_type="CAUSAL_LM",
    )


def save_final(model: Any, tok: Any, path: str) -> None:
    """Write the final output: the adapter (LoRA) or the full weights, plus the tokenizer."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        # DPO on a continued adapter adds a frozen "ref" copy; export only the trained one.
        model.save_pretrained(path, selected_adapters=["default"])
    else:
        model.save_pretrained(path)
    tok.save_pretrained(path)
