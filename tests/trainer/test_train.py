"""Real training runs on the tiny model, one per training type, plus continue and cancel.

Assertions are about behaviour a user sees (loss falls, files exist and reload, logs and
checkpoints are reported), not about answers: the tiny model memorises, it does not learn.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashtune.trainer.errors import TrainingError
from dashtune.trainer.run import train
from dashtune.trainer.spec import TrainSpec
from tests.trainer.conftest import Job, RecordingReporter
from tests.trainer.tasks import ROWS, sft_row, words

FULL_FILES = {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"}
LORA_FILES = {
    "adapter_model.safetensors",
    "adapter_config.json",
    "tokenizer.json",
    "chat_template.jinja",
}


def _generate(model: Any, tok: Any) -> str:
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "reverse abc"}],
        add_generation_prompt=True,
        return_dict=True,
        return_tensors="pt",
    )
    out = model.generate(**prompt, max_new_tokens=6, do_sample=False)
    text: str = tok.decode(out[0, prompt["input_ids"].shape[1] :])
    return text


def _reload_and_generate(path: str, lora: bool) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if lora:
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    return _generate(model, AutoTokenizer.from_pretrained(path))


def _eval_losses(job: Job) -> list[tuple[int, float]]:
    return job.reporter.series("eval_loss")


def _check_common(job: Job) -> None:
    """What every successful run reports: usage, logs, progress, checkpoints, final dir."""
    spec, result, rep = job.spec, job.result, job.reporter
    lora = spec.is_lora
    assert not result.canceled and result.usage_tokens > 0
    assert result.final_path == os.path.join(spec.output_dir, "final")
    files = set(os.listdir(result.final_path))
    assert (LORA_FILES if lora else FULL_FILES) <= files, files
    assert "ref" not in files  # DPO's frozen reference adapter is not exported
    if lora:
        config = json.loads(Path(result.final_path, "adapter_config.json").read_text())
        base = config["base_model_name_or_path"]
        assert os.path.isabs(base) and base == os.path.abspath(spec.model_path)

    text = "\n".join(rep.lines)
    assert f"training usage {result.usage_tokens} tokens" in text
    assert f"step {spec.hyper_parameters['logging_steps']}/" in text and "loss=" in text
    assert "eval step 0 eval_loss=" in text and "training data: " in text

    steps, total, _ = rep.progress_calls[-1]
    assert steps == total > 0 and rep.progress_calls[0][0] == 0
    assert all(eta is not None for s, _, eta in rep.progress_calls if s > 0)
    assert all("tokens_per_second" in v for _, v in rep.metric_calls if "loss" in v)

    assert rep.checkpoints, "no checkpoint reported"
    names = [c[0] for c in rep.checkpoints]
    assert all(f"checkpoint saved: {n}" in text for n in names)
    assert set(rep.removed) <= set(names)
    kept = set(names) - set(rep.removed)
    on_disk = set(os.listdir(os.path.join(spec.output_dir, "checkpoints"))) - {"README.md"}
    assert on_disk == kept and len(kept) <= spec.hyper_parameters["save_total_limit"]
    name, step, path, metrics = rep.checkpoints[-1]
    assert name == f"checkpoint-{step}" and os.path.isdir(path) and "loss" in metrics
    assert (LORA_FILES if lora else FULL_FILES) <= set(os.listdir(path))


def _check_loss_falls(job: Job) -> None:
    evals = _eval_losses(job)
    assert evals[0][0] == 0 and evals[-1][0] == job.reporter.progress_calls[-1][1]
    assert evals[-1][1] < evals[0][1], evals


def test_sft_full(sft_job: Job) -> None:
    _check_common(sft_job)
    _check_loss_falls(sft_job)
    assert [s for s, _ in _eval_losses(sft_job)] == [0, 10, 14]  # step 0, every 10, the end
    assert isinstance(_reload_and_generate(sft_job.result.final_path, lora=False), str)
    # A checkpoint is a full model too, loadable on its own.
    assert isinstance(_reload_and_generate(sft_job.reporter.checkpoints[-1][2], lora=False), str)


def test_sft_drops_samples_over_max_length(sft_job: Job) -> None:
    assert "training data: 64 samples, dropped 6 longer than max_length=64 tokens" in (
        sft_job.reporter.lines
    )


def test_efficient_sft_lora(lora_job: Job) -> None:
    _check_common(lora_job)
    _check_loss_falls(lora_job)
    assert isinstance(_reload_and_generate(lora_job.result.final_path, lora=True), str)
    # A checkpoint is an adapter too, loadable on its own.
    assert isinstance(_reload_and_generate(lora_job.reporter.checkpoints[-1][2], lora=True), str)


def test_cpt_with_epoch_saves_and_cosine_warmup(
    make_spec: Callable[..., TrainSpec], train_job: Callable[[TrainSpec], Job]
) -> None:
    job = train_job(
        make_spec(
            "cpt",
            save_strategy="epoch",
            save_total_limit=2,
            logging_steps=1,
            lr_scheduler_type="cosine",
            warmup_ratio=0.2,
        )
    )
    _check_common(job)
    _check_loss_falls(job)
    assert [c[1] for c in job.reporter.checkpoints] == [7, 14]  # 51 training samples, batch 8
    lrs = [lr for _, lr in job.reporter.series("learning_rate")]
    assert max(lrs) == pytest.approx(3e-3, rel=0.05)
    assert lrs[0] < max(lrs) / 2 and lrs[-1] < max(lrs) / 10  # warms up, then decays


@pytest.mark.parametrize("training_type", ["dpo_full", "dpo_lora"])
def test_dpo(
    training_type: str, make_spec: Callable[..., TrainSpec], train_job: Callable[[TrainSpec], Job]
) -> None:
    job = train_job(
        make_spec(
            training_type,
            n=96,
            n_epochs=3,
            eval_steps=100,
            lora_rank=4,
            target_modules=["q_proj", "v_proj"],
        )
    )
    _check_common(job)
    if job.spec.is_lora:
        config = json.loads(Path(job.result.final_path, "adapter_config.json").read_text())
        assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    losses = job.reporter.series("loss")
    assert losses[-1][1] < math.log(2), losses  # DPO starts at ln 2 and must go below
    assert abs(_eval_losses(job)[0][1] - math.log(2)) < 1e-3  # policy == reference at step 0
    assert isinstance(_reload_and_generate(job.result.final_path, lora=job.spec.is_lora), str)


def test_continue_lora_adapter(
    lora_job: Job, make_spec: Callable[..., TrainSpec], train_job: Callable[[TrainSpec], Job]
) -> None:
    """Same data and seed: the continued run starts where the first one ended."""
    job = train_job(
        make_spec("efficient_sft", n=96, adapter_path=lora_job.result.final_path, lora_rank=16)
    )
    _check_common(job)
    assert any("its own lora_rank=8" in line for line in job.reporter.lines)
    start = _eval_losses(job)[0][1]
    assert start == pytest.approx(_eval_losses(lora_job)[-1][1], abs=1e-4)
    assert _eval_losses(job)[-1][1] < start


def test_full_on_lora_output_merges_adapter(
    lora_job: Job, make_spec: Callable[..., TrainSpec], train_job: Callable[[TrainSpec], Job]
) -> None:
    job = train_job(make_spec("sft", n=96, adapter_path=lora_job.result.final_path, n_epochs=1))
    _check_common(job)
    assert _eval_losses(job)[0][1] == pytest.approx(_eval_losses(lora_job)[-1][1], abs=1e-4)
    assert "adapter_config.json" not in os.listdir(job.result.final_path)


def test_continue_full_with_weighted_loss(
    sft_job: Job, make_spec: Callable[..., TrainSpec], train_job: Callable[[TrainSpec], Job]
) -> None:
    """A full output as the base, with loss_weight and prompt_loss (the weighted loss path)."""
    rows = [sft_row(w, weight=0.5 if i % 2 else None) for i, w in enumerate(words(64, 5))]
    job = train_job(
        make_spec("sft", rows=rows, model_path=sft_job.result.final_path, prompt_loss=0.1)
    )
    _check_common(job)
    _check_loss_falls(job)


def test_stop_file_cancels_quickly(make_spec: Callable[..., TrainSpec]) -> None:
    spec = make_spec("sft", n=64, n_epochs=10, logging_steps=1, save_steps=1000)
    reporter = RecordingReporter()
    reporter.on_progress = lambda step: Path(spec.stop_file).touch() if step >= 2 else None
    started = time.monotonic()
    result = train(spec, reporter)
    assert result.canceled and result.usage_tokens > 0
    assert time.monotonic() - started < 20
    last_step, total, _ = reporter.progress_calls[-1]
    assert last_step == 3 and total == 70  # the stop is seen at the end of the next step
    assert not os.path.exists(result.final_path)
    assert any(line.startswith("canceled at step 3") for line in reporter.lines)


def test_stop_file_present_at_start_does_nothing(make_spec: Callable[..., TrainSpec]) -> None:
    spec = make_spec("sft", n=8)
    Path(spec.stop_file).touch()
    result = train(spec, RecordingReporter())
    assert result.canceled and result.usage_tokens == 0


def test_no_trainable_token_is_a_dataset_error(make_spec: Callable[..., TrainSpec]) -> None:
    rows = [sft_row(w, weight=0.0) for w in words(8, 0)]
    with pytest.raises(TrainingError) as exc:
        train(make_spec("sft", rows=rows), RecordingReporter())
    assert exc.value.code == "InvalidDataset" and "no token to train" in exc.value.message


def test_invalid_line_fails_the_job(make_spec: Callable[..., TrainSpec]) -> None:
    spec = make_spec("sft", rows=[sft_row("abc"), ROWS["cpt"]("abc")])
    with pytest.raises(TrainingError) as exc:
        train(spec, RecordingReporter())
    assert exc.value.code == "InvalidDataset"
    assert "train.jsonl" in exc.value.message and "line 2" in exc.value.message


def test_unloadable_model_is_a_model_load_error(
    make_spec: Callable[..., TrainSpec], tmp_path: Path
) -> None:
    with pytest.raises(TrainingError) as exc:
        train(make_spec("sft", model_path=str(tmp_path / "missing")), RecordingReporter())
    assert exc.value.code == "ModelLoadError" and str(tmp_path / "missing") in exc.value.message
