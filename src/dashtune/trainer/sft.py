"""Supervised fine-tuning on chat samples with per-token loss weights (TRL SFTTrainer).

Each token's weight is its assistant message's `loss_weight` (default 1) or, outside
assistant messages, `prompt_loss` (default 0). The loss is the weight-averaged token
loss: sum(w * nll) / sum(w). When every trained token weighs 1 (the common case) the
weights are left out and TRL's own loss runs unchanged. Batches are packed without padding
(packing.py) unless the job sets `packing: false`; weights travel packed beside the tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from dashtune.domain.chat_masking import (
    DEFAULT_CHAT_TEMPLATE,
    TemplateError,
    assistant_spans,
    has_generation_markers,
    token_runs,
)
from dashtune.trainer.errors import INVALID_CHAT_TEMPLATE, TRAINING_FAILED, TrainingError
from dashtune.trainer.packing import PackedCollator

Sample = dict[str, Any]
VARLEN_KERNELS = ("flash_attention_2", "sdpa_varlen")


def masking(tok: Any) -> tuple[str | None, bool]:
    """How assistant tokens are found: (template to render with, whether it has markers).

    The model's own `{% generation %}` markers first, then TRL's patched copy of a template
    it knows (the Qwen3 family needs it: earlier turns lose their think block), else the
    prefix rule of `domain.chat_masking` on the model's template. A model without a template
    gets DEFAULT_CHAT_TEMPLATE, set on `tok` so that the saved output carries it.
    """
    from trl.chat_template_utils import get_training_chat_template

    if not tok.chat_template:
        tok.chat_template = DEFAULT_CHAT_TEMPLATE
    if has_generation_markers(tok.chat_template):
        return None, True
    try:
        return get_training_chat_template(tok), True
    except ValueError:  # a template TRL does not know: the prefix rule decides
        return None, False


def _prefix_runs(
    tok: Any, messages: list[dict[str, Any]]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of the conversation and the token run of each assistant message."""

    def render(msgs: list[dict[str, Any]], prompt: bool) -> str:
        text: str = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=prompt)
        return text

    try:
        text, spans = assistant_spans(render, messages)
    except TemplateError as exc:
        raise TrainingError(INVALID_CHAT_TEMPLATE, str(exc)) from None
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), token_runs(enc["offset_mapping"], spans)


def _marker_runs(
    tok: Any, messages: list[dict[str, Any]], template: str | None
) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tok.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        chat_template=template,
    )
    return list(enc["input_ids"]), _runs(list(enc["assistant_masks"]))


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of 1s: one per rendered assistant message, in order."""
    spans, start = [], None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            spans.append((start, i))
            start = None
    return spans


def chat_encoder(
    tok: Any, prompt_loss: float, log: Callable[[str], None] | None = None
) -> Callable[[Sample], tuple[Sample, int] | None]:
    """Turn a `{"messages": [...]}` row into input_ids, labels and per-token loss weights."""
    own = bool(tok.chat_template)
    template, markers = masking(tok)
    if log is not None:
        how = "{% generation %} markers" if markers else "rendering each conversation in prefixes"
        which = "the model's chat template" if own else "the default ChatML template"
        log(f"assistant tokens found with {which}, by {how}")

    def encode(row: Sample) -> tuple[Sample, int] | None:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        if markers:
            ids, spans = _marker_runs(tok, messages, template)
        else:
            ids, spans = _prefix_runs(tok, messages)
        asked = [
            float(m.get("loss_weight", 1.0)) for m in row["messages"] if m["role"] == "assistant"
        ]
        if len(spans) != len(
            asked
        ):  # the template merged or skipped a message: only a uniform weight maps
            if len(set(asked)) > 1:
                raise TrainingError(
                    TRAINING_FAILED,
                    "per-message loss_weight needs one rendered span per assistant message; "
                    "this chat template does not give that",
                )
            asked = asked[:1] * len(spans)
        weights = [prompt_loss] * len(ids)
        for (start, end), w in zip(spans, asked, strict=True):
            weights[start:end] = [w] * (end - start)
        if not any(w > 0 for w in weights[1:]):  # the first token is never a prediction target
            return None
        labels = [t if w > 0 else -100 for t, w in zip(ids, weights, strict=True)]
        return {"input_ids": ids, "labels": labels, "loss_weights": weights}, len(ids)

    return encode


def strip_unit_weights(samples: list[Sample]) -> bool:
    """Drop the weights when every trained token weighs 1; return whether weights remain."""
    weighted = any(
        w not in (0.0, 1.0) for s in samples if "loss_weights" in s for w in s["loss_weights"]
    )
    if not weighted:
        for s in samples:
            s.pop("loss_weights", None)
    return weighted


class WeightedCollator:
    """TRL's padding collator, plus the `loss_weights` column padded with zeros."""

    def __init__(self, pad_token_id: int) -> None:
        self.base = DataCollatorForLanguageModeling(pad_token_id=pad_token_id)

    def __call__(self, examples: list[Sample]) -> dict[str, Any]:
        batch: dict[str, Any] = self.base(
            [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples]
        )
        if "loss_weights" in examples[0]:
            batch["loss_weights"] = torch.nn.utils.rnn.pad_sequence(
                [torch.tensor(e["loss_weights"], dtype=torch.float32) for e in examples],
                batch_first=True,
                padding_value=0.0,
            )
        return batch


class WeightedSFTTrainer(SFTTrainer):
    """SFTTrainer whose loss honours per-token weights when the batch carries them."""

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        columns: list[str] = self._signature_columns or []
        if "loss_weights" not in columns:
            self._signature_columns = [*columns, "loss_weights"]  # type: ignore[assignment]

    def _get_num_items_in_batch(self, batch_samples: list[Any], device: Any) -> Any:
        # Gradient accumulation normalises by the whole window: the sum of its weights.
        if batch_samples and "loss_weights" in batch_samples[0]:
            return sum(b["loss_weights"][..., 1:].sum() for b in batch_samples).to(device)
        return super()._get_num_items_in_batch(batch_samples, device)

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        # Usage counts real tokens; a packed batch says how many (its pad id may be EOS).
        real = inputs.get("num_real_tokens")
        if real is None:
            super()._track_num_input_tokens(inputs)
            return
        real = torch.as_tensor(real, device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(real).sum().item())

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        # A copy: the training loop counts usage from its own dict after this step.
        inputs = {k: v for k, v in inputs.items() if k != "num_real_tokens"}
        weights = inputs.pop("loss_weights", None)
        if weights is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs["use_cache"] = False
        outputs = model(**inputs, fused_lm_head=True)  # per-token log-probs of labels[:, 1:]
        w = weights[:, 1:].to(outputs.log_probs.dtype)
        total = w.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -(outputs.log_probs * w).sum() / torch.as_tensor(total).clamp(min=1e-8)
        return (loss, outputs) if return_outputs else loss


def build_trainer(
    model: Any,
    tok: Any,
    args: dict[str, Any],
    train: list[Sample],
    val: list[Sample],
    peft_config: Any,
    callbacks: list[Any],
    packing: bool = False,
) -> Any:
    """A trainer over samples that are already tokenized and labelled (SFT and CPT)."""
    from datasets import Dataset

    config = SFTConfig(**args, dataset_kwargs={"skip_prepare_dataset": True})
    # Kernels told the sample boundaries take the whole batch as one row.
    varlen = getattr(model.config, "_attn_implementation", None) in VARLEN_KERNELS
    collator: Any = (
        PackedCollator(tok.pad_token_id, args["max_length"], one_row=varlen)
        if packing
        else WeightedCollator(tok.pad_token_id)
    )
    return WeightedSFTTrainer(
        model=model,
        args=config,
        processing_class=tok,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(val) if val else None,
        data_collator=collator,
        peft_config=peft_config,
        callbacks=callbacks,
    )
