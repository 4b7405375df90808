"""The per-token weighted loss equals sum(w * nll) / sum(w), computed by hand."""

from __future__ import annotations

from typing import Any

import pytest
import torch

pytestmark = pytest.mark.filterwarnings(
    "ignore::FutureWarning"
)  # TRL 1.16 vs transformers 5.24 noise


def _trainer(tiny_model: str, tmp_path: Any, samples: list[dict[str, Any]], ga: int = 1) -> Any:
    from transformers import AutoModelForCausalLM

    from dashtune.trainer.arguments import common_arguments
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import build_trainer
    from tests.trainer.tasks import hyper_parameters

    tok = load_tokenizer(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    hp = hyper_parameters("sft", gradient_accumulation_steps=ga)
    args = common_arguments(str(tmp_path), hp, len(samples), has_eval=False)
    return build_trainer(model, tok, args, samples, [], None, [])


def _samples(tiny_model: str) -> list[dict[str, Any]]:
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import chat_encoder
    from tests.trainer.tasks import sft_row, words

    encode = chat_encoder(load_tokenizer(tiny_model), prompt_loss=0.1)
    out = []
    for i, w in enumerate(words(4, 3)):
        encoded = encode(sft_row(w, weight=[0.5, 1.0, 0.25, 0.0][i]))
        assert encoded is not None
        out.append(encoded[0])
    return out


def test_weighted_loss_matches_hand_computation(tiny_model: str, tmp_path: Any) -> None:
    samples = _samples(tiny_model)
    trainer = _trainer(tiny_model, tmp_path, samples)
    batch = trainer.data_collator(samples)
    with torch.no_grad():
        logits = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none"
        )
        w = batch["loss_weights"][:, 1:]
        expected = (nll * w).sum() / w.sum()
        got = trainer.compute_loss(trainer.model, dict(batch))
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


def test_unit_weights_use_trl_loss_unchanged(tiny_model: str, tmp_path: Any) -> None:
    from dashtune.trainer.sft import strip_unit_weights

    samples = _samples(tiny_model)
    for s in samples:  # weight 1 on every trained token
        s["loss_weights"] = [1.0 if lab != -100 else 0.0 for lab in s["labels"]]
    weighted = _trainer(tiny_model, tmp_path, [dict(s) for s in samples])
    with torch.no_grad():
        a = weighted.compute_loss(weighted.model, dict(weighted.data_collator(samples)))
    assert not strip_unit_weights(samples) and "loss_weights" not in samples[0]
    plain = _trainer(tiny_model, tmp_path, samples)
    with torch.no_grad():
        b = plain.compute_loss(plain.model, dict(plain.data_collator(samples)))
    assert torch.allclose(a, b, atol=1e-5), (a, b)


def test_gradient_accumulation_normalises_by_window_weight(tiny_model: str, tmp_path: Any) -> None:
    samples = _samples(tiny_model)
    trainer = _trainer(tiny_model, tmp_path, samples, ga=2)
    halves = [trainer.data_collator(samples[:2]), trainer.data_collator(samples[2:])]
    window = trainer._get_num_items_in_batch(halves, torch.device("cpu"))
    whole = trainer.data_collator(samples)
    assert torch.isclose(window, whole["loss_weights"][:, 1:].sum())
    with torch.no_grad():
        parts = sum(
            trainer.compute_loss(trainer.model, dict(h), num_items_in_batch=window) for h in halves
        )
        full = trainer.compute_loss(trainer.model, dict(whole))
    assert torch.allclose(parts, full, atol=1e-5), (parts, full)
