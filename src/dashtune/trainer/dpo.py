"""Direct preference optimisation on chosen/rejected replies (TRL DPOTrainer).

The reference model is TRL's default: a frozen copy for full tuning, the base with the
adapter disabled for a new LoRA adapter, a frozen copy of the starting adapter when
continuing one. `dpo_beta` is DPO's beta.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trl import DPOConfig, DPOTrainer

Sample = dict[str, Any]


def _reply(value: Any) -> dict[str, str]:
    if isinstance(value, str):
        return {"role": "assistant", "content": value}
    return {"role": "assistant", "content": value["content"]}


def preference_encoder(tok: Any) -> Callable[[Sample], tuple[Sample, int] | None]:
    """Turn a DashScope DPO row into TRL's conversational prompt/chosen/rejected columns.

    The length that max_length is checked against is the longer of prompt+chosen and
    prompt+rejected, rendered as TRL will render them.
    """

    def encode(row: Sample) -> tuple[Sample, int] | None:
        prompt = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        chosen, rejected = _reply(row["chosen"]), _reply(row["rejected"])
        length = max(
            len(
                tok.apply_chat_template(prompt + [reply], tokenize=True, return_dict=True)[
                    "input_ids"
                ]
            )
            for reply in (chosen, rejected)
        )
        return {"prompt": prompt, "chosen": [chosen], "rejected": [rejected]}, length

    return encode


def build_trainer(
    model: Any,
    tok: Any,
    args: dict[str, Any],
    train: list[Sample],
    val: list[Sample],
    peft_config: Any,
    callbacks: list[Any],
    beta: float,
) -> Any:
    """A DPOTrainer over the encoded pairs; ref_model=None lets TRL choose the reference."""
    from datasets import Dataset

    return DPOTrainer(
        model=model,
        ref_model=None,
        args=DPOConfig(**args, beta=beta),
        processing_class=tok,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(val) if val else None,
        peft_config=peft_config,
        callbacks=callbacks,
    )
