"""Packed batches are exact: a token's log-prob in a packed row is its log-prob with the
sample alone, and a weighted loss is the same packed and unpacked.

Tolerance: 1e-5 absolute on float32 log-probs (the tiny model's log-probs are about -6; the
observed difference is reduction-order rounding, ~1e-6). The negative control shows the
check can fail: the same row with one run of positions (no sample boundaries) differs.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.trainer.conftest import Job
from tests.trainer.tasks import save_random_qwen2, sft_row, words

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # TRL 1.16 vs transformers

ATOL = 1e-5


def _samples(tiny_model: str, n: int = 6, prompt_loss: float = 0.1) -> list[dict[str, Any]]:
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import chat_encoder

    encode = chat_encoder(load_tokenizer(tiny_model), prompt_loss=prompt_loss)
    out = []
    for i, w in enumerate(words(n, 5)):
        # One long sample, so that shorter ones share rows as wide as it.
        repeat = 12 if i == n - 1 else 1 + i % 3
        encoded = encode(sft_row(w * repeat, weight=[0.5, 1.0, 0.25][i % 3]))
        assert encoded is not None
        out.append(encoded[0])
    return out


def _log_probs(model: Any, ids: torch.Tensor, **kw: Any) -> torch.Tensor:
    """Log-prob of each next token: [rows, len-1]."""
    logits = model(input_ids=ids, use_cache=False, **kw).logits.float()
    return torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]


@pytest.mark.parametrize(
    ("attn", "one_row"),
    [("sdpa", False), ("sdpa", True), ("eager", False), ("eager", True), ("sdpa_varlen", True)],
    ids=["sdpa-rows", "sdpa-one-row", "eager-rows", "eager-one-row", "sdpa_varlen"],
)
def test_packed_row_log_probs_equal_each_sample_alone(
    tiny_model: str, attn: str, one_row: bool
) -> None:
    _check_packed_log_probs(tiny_model, tiny_model, attn, one_row)


def test_sdpa_varlen_keeps_a_sliding_window_inside_each_sample(
    tiny_model: str, tmp_path: Any
) -> None:
    """A Qwen2 whose layers all slide over 5 tokens: each sample alone through transformers'
    own sliding-window SDPA mask is the reference for sdpa_varlen's per-sample window."""
    from dashtune.trainer.model import load_tokenizer

    tok = load_tokenizer(tiny_model)
    slide = save_random_qwen2(
        tok,
        tmp_path / "slide",
        32,
        2,
        use_sliding_window=True,
        sliding_window=5,
        max_window_layers=0,
    )
    _check_packed_log_probs(tiny_model, slide, "sdpa_varlen", True)


def _check_packed_log_probs(tiny_model: str, model_dir: str, attn: str, one_row: bool) -> None:
    from transformers import AutoModelForCausalLM

    from dashtune.trainer.packing import PackedCollator

    if attn == "sdpa_varlen":
        from dashtune.trainer.varlen_attention import register

        register()
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn).eval()
    reference = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    samples = _samples(tiny_model)
    lengths = [len(s["input_ids"]) for s in samples]
    batch = PackedCollator(pad_token_id=0, max_length=64, one_row=one_row)(samples)
    rows, width = batch["input_ids"].shape
    assert (rows == 1) if one_row else (1 < rows < len(samples) and width == max(lengths))
    assert int(batch["num_real_tokens"]) == sum(lengths)
    bounds = {k: batch[k] for k in ("cu_seq_lens_q", "cu_seq_lens_k") if attn == "sdpa_varlen"}
    with torch.no_grad():
        packed = _log_probs(model, batch["input_ids"], position_ids=batch["position_ids"], **bounds)
        # control: no sample boundaries
        flat = _log_probs(reference, batch["input_ids"], position_ids=None)
        worst = 0.0
        for s in samples:  # find each sample in the rows (best-fit reorders them)
            n = len(s["input_ids"])
            r, at = next(
                (r, i)
                for r in range(rows)
                for i in range(width - n + 1)
                if batch["position_ids"][r, i] == 0
                and batch["input_ids"][r, i : i + n].tolist() == s["input_ids"]
            )
            alone = _log_probs(reference, torch.tensor([s["input_ids"]]))[0]
            got = packed[r, at : at + n - 1]
            worst = max(worst, float((got - alone).abs().max()))
    assert worst < ATOL, (attn, worst)
    later = (batch["position_ids"] > 0) & (batch["labels"] != -100)
    later[:, 0] = False
    # Tokens after another sample in the same row would see it without the position ids.
    crossed = later & (torch.arange(width) >= batch["position_ids"] + 1)
    assert (flat - packed)[crossed[:, 1:]].abs().max() > 1e-3, "control: packing info is used"


def test_packed_rows_respect_max_length_and_mask_sample_starts(tiny_model: str) -> None:
    from dashtune.trainer.packing import PackedCollator, best_fit_rows

    assert best_fit_rows([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    samples = _samples(tiny_model)
    longest = max(len(s["input_ids"]) for s in samples)
    batch = PackedCollator(pad_token_id=0, max_length=64)(samples)
    assert batch["input_ids"].shape[1] == longest and batch["input_ids"].shape[0] > 1
    assert PackedCollator(0, max_length=longest - 1)(samples)["input_ids"].shape[1] == longest
    starts = batch["position_ids"] == 0
    assert (batch["labels"][starts] == -100).all()  # never predicted from the previous sample
    assert (batch["loss_weights"][starts] == 0).all()
    real = sum(len(s["input_ids"]) for s in samples)
    assert int(batch["num_real_tokens"]) == real
    trained = sum(sum(1 for lab in s["labels"][1:] if lab != -100) for s in samples)
    assert int((batch["labels"] != -100).sum()) == trained


def test_weighted_loss_is_the_same_packed_and_unpacked(tiny_model: str, tmp_path: Any) -> None:
    from transformers import AutoModelForCausalLM

    from dashtune.trainer.arguments import common_arguments
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import build_trainer
    from tests.trainer.tasks import hyper_parameters

    tok = load_tokenizer(tiny_model)
    samples = _samples(tiny_model)
    losses = []
    for packing in (True, False):
        model = AutoModelForCausalLM.from_pretrained(tiny_model)
        hp = hyper_parameters("sft", max_length=64)
        args = common_arguments(str(tmp_path / str(packing)), hp, len(samples), has_eval=False)
        trainer = build_trainer(model, tok, args, samples, [], None, [], packing=packing)
        with torch.no_grad():
            losses.append(trainer.compute_loss(trainer.model, dict(trainer.data_collator(samples))))
    assert torch.allclose(losses[0], losses[1], atol=ATOL), losses


def _weighted_rows(n: int) -> list[dict[str, Any]]:
    return [
        sft_row(w * (1 + i % 3), weight=[0.5, 1.0, 0.25][i % 3]) for i, w in enumerate(words(n, 7))
    ]


def test_weighted_job_trains_the_same_packed_and_unpacked(make_spec: Any, train_job: Any) -> None:
    rows = _weighted_rows(48)
    jobs: dict[bool, Job] = {}
    for packing in (True, False):
        spec = make_spec("sft", rows=rows, packing=packing, prompt_loss=0.1, n_epochs=1)
        jobs[packing] = train_job(spec)
    packed, plain = jobs[True], jobs[False]
    assert any("packed without padding" in line for line in packed.reporter.lines)
    assert not any("packed without padding" in line for line in plain.reporter.lines)
    assert packed.result.usage_tokens == plain.result.usage_tokens > 0  # real tokens only
    assert packed.result.steps == plain.result.steps
    for key in ("loss", "eval_loss"):
        a, b = packed.reporter.series(key), plain.reporter.series(key)
        assert a and [s for s, _ in a] == [s for s, _ in b]
        for (_, x), (_, y) in zip(a, b, strict=True):
            assert abs(x - y) <= 1e-4 * max(1.0, abs(y)), (key, a, b)


def test_flash_attention_batches_are_one_row_with_varlen_boundaries(tiny_model: str) -> None:
    from dashtune.trainer.packing import PackedCollator

    samples = _samples(tiny_model)
    lengths = [len(s["input_ids"]) for s in samples]
    batch = PackedCollator(pad_token_id=0, max_length=8, one_row=True)(samples)
    assert batch["input_ids"].shape == (1, sum(lengths))  # FA2 sees boundaries only in one row
    assert batch["cu_seq_lens_q"].tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    assert batch["max_length_k"] == max(lengths)
    assert (batch["position_ids"][0] == 0).nonzero().flatten().tolist() == batch["cu_seq_lens_q"][
        :-1
    ].tolist()
