"""Hardware settings: what "auto" picks on CPU (and, with the CUDA probes faked, on a bf16
GPU), that explicit hyper-parameters win, and that the job log says what was chosen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from dashtune.trainer.errors import TrainingError
from dashtune.trainer.hardware import choose, with_checkpointing
from tests.trainer.tasks import hyper_parameters, save_random_qwen2

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

AUTO = {
    "bf16": "auto",
    "attn_implementation": "auto",
    "gradient_checkpointing": "auto",
    "use_liger_kernel": "auto",
}


def _model(tiny_model: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model)


def test_cpu_auto_is_float32_sdpa_no_checkpointing_no_liger(tiny_model: str) -> None:
    hw = choose(AUTO, cuda=False, model_config=_model(tiny_model).config)
    assert (hw.bf16, hw.attn_implementation, hw.use_liger_kernel) == (False, "sdpa", False)
    assert hw.load_dtype(is_lora=True) == "float32"
    hw = with_checkpointing(hw, AUTO, _model(tiny_model), is_lora=False, tokens=8 * 64)
    assert hw.gradient_checkpointing is False
    line = hw.describe(is_lora=False)
    assert "weights float32" in line and "attention sdpa" in line
    assert "gradient checkpointing off (estimated" in line and "GiB of" in line


def _config(model_type: str = "qwen2", hidden_size: int = 512) -> Any:
    return SimpleNamespace(model_type=model_type, hidden_size=hidden_size)


def test_cpu_bf16_needs_bf16_instructions_and_a_large_enough_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dashtune.trainer import hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    hw = choose(AUTO, cuda=False, model_config=_config(hidden_size=512))
    assert hw.bf16 and hw.load_dtype(is_lora=True) == "bfloat16"
    assert "bf16 compute (CPU with bf16 instructions, hidden size 512)" in hw.describe(False)
    small = choose(AUTO, cuda=False, model_config=_config(hidden_size=64))
    assert not small.bf16 and "hidden size 64 too small" in small.describe(False)
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    hw = choose(AUTO, cuda=False, model_config=_config(hidden_size=4096))
    assert not hw.bf16 and "no bf16 instructions" in hw.describe(False)
    assert choose({**AUTO, "bf16": True}, cuda=False, model_config=_config(hidden_size=64)).bf16


def test_packed_jobs_of_plain_causal_decoders_get_sdpa_varlen() -> None:
    assert choose(AUTO, cuda=False, model_config=_config(), packed=True).attn_implementation == (
        "sdpa_varlen"
    )
    # Not packed, or an architecture with more than causal softmax attention: plain SDPA.
    assert choose(AUTO, cuda=False, model_config=_config()).attn_implementation == "sdpa"
    gemma = _config("gemma2")
    assert choose(AUTO, cuda=False, model_config=gemma, packed=True).attn_implementation == "sdpa"
    asked = {**AUTO, "attn_implementation": "sdpa_varlen"}
    hw = choose(asked, cuda=False, model_config=gemma, packed=True)
    assert hw.attn_implementation == "sdpa" and "sdpa_varlen needs packed" in hw.describe(False)


def test_checkpointing_turns_on_when_the_estimate_passes_device_memory(tiny_model: str) -> None:
    hw = choose(AUTO, cuda=False)
    # 10^12 tokens a micro-batch: activations far beyond any host's RAM.
    hw = with_checkpointing(hw, AUTO, _model(tiny_model), is_lora=False, tokens=10**12)
    assert hw.gradient_checkpointing is True


def test_explicit_values_win(tiny_model: str) -> None:
    hp = {**AUTO, "bf16": True, "attn_implementation": "eager", "gradient_checkpointing": True}
    hw = with_checkpointing(choose(hp, cuda=False), hp, _model(tiny_model), False, 8)
    assert (hw.bf16, hw.attn_implementation, hw.gradient_checkpointing) == (True, "eager", True)
    assert "hyper-parameter gradient_checkpointing" in hw.describe(False)
    off = {**AUTO, "gradient_checkpointing": False}
    hw = with_checkpointing(choose(off, cuda=False), off, _model(tiny_model), False, 10**12)
    assert hw.gradient_checkpointing is False


def test_liger_asked_for_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(TrainingError, match="liger-kernel"):
        choose({**AUTO, "use_liger_kernel": True}, cuda=False)


def test_bf16_gpu_auto_loads_lora_base_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from dashtune.trainer import hardware

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(hardware, "_installed", lambda module: False)
    hw = choose(AUTO, cuda=True)
    assert hw.bf16 and hw.attn_implementation == "sdpa" and not hw.use_liger_kernel
    assert hw.load_dtype(is_lora=True) == "bfloat16" and hw.load_dtype(is_lora=False) == "float32"
    monkeypatch.setattr(hardware, "_installed", lambda module: True)
    hw = choose(AUTO, cuda=True)
    assert hw.attn_implementation == "flash_attention_2" and hw.use_liger_kernel


def test_job_logs_the_settings_and_honours_overrides(make_spec: Any, train_job: Any) -> None:
    job = train_job(
        make_spec(
            "sft",
            n=16,
            n_epochs=1,
            **AUTO | {"gradient_checkpointing": True, "attn_implementation": "eager"},
        )
    )
    lines = [x for x in job.reporter.lines if x.startswith("hardware settings:")]
    assert len(lines) == 1, job.reporter.lines
    assert "attention eager (hyper-parameter" in lines[0]
    assert "gradient checkpointing on (hyper-parameter" in lines[0]
    assert any(x.startswith("peak memory: RSS ") for x in job.reporter.lines)


def test_settings_reach_the_trainer_arguments(tmp_path: Any) -> None:
    from dashtune.trainer.arguments import common_arguments
    from dashtune.trainer.hardware import Hardware

    hp = hyper_parameters("sft")
    hw = Hardware(False, bf16=True, attn_implementation="sdpa", use_liger_kernel=False)
    hw.gradient_checkpointing = True
    args = common_arguments(str(tmp_path), hp, 40, has_eval=False, hw=hw)
    assert (args["bf16"], args["gradient_checkpointing"], args["use_liger_kernel"]) == (
        True,
        True,
        False,
    )
    # Without settings: CPU defaults, and never TRL's silent gradient_checkpointing=True.
    args = common_arguments(str(tmp_path), hp, 40, has_eval=False)
    assert args["gradient_checkpointing"] is False and args["bf16"] is False


@pytest.mark.parametrize("training_type", ["sft", "efficient_sft", "dpo_lora"])
def test_a_wider_model_trains_with_the_settings_auto_picks_for_it(
    make_spec: Any, train_job: Any, tmp_path: Any, tiny_model: str, training_type: str
) -> None:
    """Hidden size 256 (dashtune-tiny's is 64): packed, so sdpa_varlen (DPO is not packed:
    SDPA); bf16 compute where this CPU has bf16 instructions (LoRA: the frozen base in bf16).
    The job learns, and a full job's output loads in float32 for serving."""
    import torch
    from transformers import AutoModelForCausalLM

    from dashtune.trainer.hardware import cpu_has_bf16
    from dashtune.trainer.model import load_tokenizer

    wide = save_random_qwen2(load_tokenizer(tiny_model), tmp_path / "wide", 256, 2)
    hp = {"n_epochs": 3, "learning_rate": 3e-3 if training_type == "sft" else 1e-2}
    job = train_job(make_spec(training_type, n=48, model_path=wide, **hp))
    (line,) = [x for x in job.reporter.lines if x.startswith("hardware settings:")]
    dpo = training_type.startswith("dpo")
    attention = "sdpa (CPU: no FlashAttention)" if dpo else "sdpa_varlen (CPU: no FlashAttention"
    assert f"attention {attention}" in line, line
    bf16 = cpu_has_bf16()
    assert ("bf16 compute (CPU with bf16 instructions, hidden size 256)" in line) == bf16, line
    if training_type != "sft":
        assert ("weights bfloat16" in line) == bf16, line
    evals = [v for _, v in job.reporter.series("eval_loss")]
    # DPO's loss starts at log 2 = 0.69 and falls slowly at this size (0.69 -> 0.67 here).
    assert len(evals) >= 2 and evals[-1] < evals[0] - (0.01 if dpo else 0.5), evals
    if training_type == "sft":  # a LoRA output is an adapter, loaded onto the base
        final = AutoModelForCausalLM.from_pretrained(job.result.final_path)
        assert final.dtype == torch.float32
