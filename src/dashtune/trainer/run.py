"""`train(spec, reporter)`: one job from data to final model, for every training type.

The steps read top to bottom: read and encode the data, load the model, evaluate at
step 0, train, evaluate at the end, save the final model. The per-type parts (encoding
and the TRL trainer) live in sft.py, cpt.py and dpo.py.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from dashtune.trainer.data import Encoded, encode_all, read_rows, split_validation
from dashtune.trainer.errors import INVALID_DATASET, TRAINING_FAILED, TrainingError
from dashtune.trainer.hardware import Hardware, choose, peak_memory, with_checkpointing
from dashtune.trainer.spec import TRAINING_TYPES, Reporter, TrainResult, TrainSpec

# Documented cloud keys with no effect here; the API accepts them (domain.hyperparams).
NOT_APPLIED = ("data_augmentation", "augmentation_types", "augmentation_ratio", "freeze_vit")


def _quiet_process(threads: int) -> None:
    """Worker-process settings: no hub access, no progress bars, `threads` torch threads."""
    # Read by huggingface_hub at import, so set before the first transformers import.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import datasets
    import torch
    import transformers

    torch.set_num_threads(threads)  # more threads than cores stalls tiny models (feasibility P1)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    # TRL 1.16 calls names transformers 5.24 deprecates (feasibility P10): noise in job logs.
    warnings.filterwarnings("ignore", category=FutureWarning)


def _summary(kind: str, enc: Encoded, max_length: int) -> str:
    line = f"{kind} data: {len(enc.samples)} samples"
    if enc.too_long:
        line += f", dropped {enc.too_long} longer than max_length={max_length} tokens"
    if enc.untrained:
        line += f", dropped {enc.untrained} with no token to train (loss_weight 0, prompt_loss 0)"
    return line


def _encoder(spec: TrainSpec, tok: Any, reporter: Reporter) -> Any:
    if spec.is_dpo:
        from dashtune.trainer.dpo import preference_encoder

        return preference_encoder(tok)
    if spec.training_type == "cpt":
        from dashtune.trainer.cpt import text_encoder

        return text_encoder(tok)
    from dashtune.trainer.sft import chat_encoder

    return chat_encoder(tok, spec.hyper_parameters["prompt_loss"], reporter.log)


def _datasets(spec: TrainSpec, tok: Any, reporter: Reporter) -> tuple[list[Any], list[Any]]:
    """Training and validation samples, encoded, with over-long ones dropped and logged."""
    hp = spec.hyper_parameters
    encode = _encoder(spec, tok, reporter)
    train = encode_all(read_rows(spec.training_files, spec.training_type), encode, hp["max_length"])
    reporter.log(_summary("training", train, hp["max_length"]))
    if spec.validation_files:
        rows = read_rows(spec.validation_files, spec.training_type)
        val = encode_all(rows, encode, hp["max_length"])
        reporter.log(_summary("validation", val, hp["max_length"]))
        train_samples, val_samples = train.samples, val.samples
    else:
        train_samples, val_samples = split_validation(
            train.samples, hp["split"], hp["max_split_val_dataset_sample"], hp["seed"]
        )
        reporter.log(
            f"validation split: {len(val_samples)} of {len(train.samples)} samples held out"
        )
    if not train_samples:
        raise TrainingError(
            INVALID_DATASET,
            "no training sample left to train on: "
            + _summary("training", train, hp["max_length"]).split(": ", 1)[1],
        )
    return train_samples, val_samples


def _build_trainer(
    spec: TrainSpec,
    model: Any,
    tok: Any,
    train: list[Any],
    val: list[Any],
    callbacks: list[Any],
    hw: Hardware | None = None,
) -> Any:
    from dashtune.trainer.arguments import common_arguments
    from dashtune.trainer.model import lora_config

    hp = spec.hyper_parameters
    args = common_arguments(spec.output_dir, hp, len(train), has_eval=bool(val), hw=hw)
    new_adapter = lora_config(hp) if spec.is_lora and spec.adapter_path is None else None
    if spec.is_dpo:
        from dashtune.trainer import dpo

        return dpo.build_trainer(
            model, tok, args, train, val, new_adapter, callbacks, beta=hp["dpo_beta"]
        )
    from dashtune.trainer import sft

    sft.strip_unit_weights(train + val)
    return sft.build_trainer(
        model, tok, args, train, val, new_adapter, callbacks, packing=hp.get("packing", False)
    )


def _model_config(spec: TrainSpec) -> Any:
    """The base model's config (size and architecture decide the hardware settings), or
    None when it cannot be read here: load_model then says what is wrong with the model."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(os.path.abspath(spec.model_path))
    except Exception:  # transformers raises many types for a bad dir
        return None


def _log_kept_adapter(model: Any, hp: dict[str, Any], reporter: Reporter) -> None:
    """A continued adapter keeps its own shape; say so when this job asked for another."""
    cfg = model.peft_config["default"]
    asked = (hp["lora_rank"], hp["lora_alpha"])
    if asked != (cfg.r, cfg.lora_alpha):
        reporter.log(
            f"continuing the adapter with its own lora_rank={cfg.r} lora_alpha={cfg.lora_alpha}; "
            f"this job's lora_rank={asked[0]} lora_alpha={asked[1]} are not applied"
        )


def train(spec: TrainSpec, reporter: Reporter, threads: int = 1) -> TrainResult:
    """Run one training job; raises TrainingError for failures the user can fix."""
    if spec.training_type not in TRAINING_TYPES:
        raise TrainingError(TRAINING_FAILED, f"unknown training_type {spec.training_type!r}")
    _quiet_process(threads)
    from transformers import PrinterCallback, set_seed

    from dashtune.trainer.arguments import world_size
    from dashtune.trainer.callbacks import ReportCallback, StopOnFile
    from dashtune.trainer.model import load_model, load_tokenizer, save_final
    from dashtune.trainer.resume import PauseOnFile, atomic_checkpoints

    hp = spec.hyper_parameters
    final = os.path.join(spec.output_dir, "final")
    if spec.stop_file and os.path.exists(spec.stop_file):  # canceled while queued: do no work
        reporter.log("canceled before training started; training usage 0 tokens")
        return TrainResult(usage_tokens=0, final_path=final, canceled=True)
    for key in NOT_APPLIED:
        if key in hp:
            reporter.log(f"hyper-parameter {key} is not applied by this trainer")

    tok = load_tokenizer(spec.model_path)
    train_samples, val_samples = _datasets(spec, tok, reporter)
    set_seed(hp["seed"])  # before the model: a new LoRA adapter is initialised randomly
    # DPO pairs are batched by TRL's own (padding) collator, whatever the hyper-parameters say.
    packed = bool(hp.get("packing")) and not spec.is_dpo
    hw = choose(hp, model_config=_model_config(spec), packed=packed)
    model = load_model(spec, hw.load_dtype(spec.is_lora), hw.attn_implementation)
    micro_batch_tokens = max(1, hp["batch_size"] // world_size()) * hp["max_length"]
    hw = with_checkpointing(hw, hp, model, spec.is_lora, micro_batch_tokens)
    reporter.log(hw.describe(spec.is_lora))
    if spec.is_lora and spec.adapter_path:
        _log_kept_adapter(model, hp, reporter)
    stop, report = StopOnFile(spec.stop_file), ReportCallback(reporter)
    pause = PauseOnFile(spec.pause_file)
    # Pause before stop: a cancel's "do not save" wins when both are asked.
    callbacks = [pause, stop, report]
    trainer = _build_trainer(spec, model, tok, train_samples, val_samples, callbacks, hw)
    trainer.remove_callback(PrinterCallback)  # the reporter is the log; keep stdout quiet
    atomic_checkpoints(trainer)
    reporter.log(
        f"training {spec.training_type} for {hp['n_epochs']} epoch(s), "
        f"{trainer.args.per_device_train_batch_size * trainer.args.world_size} samples a batch"
        + (f" over {trainer.args.world_size} workers" if trainer.args.world_size > 1 else "")
        + (f" (adapter from {spec.adapter_path})" if spec.adapter_path else "")
        + (", packed without padding" if hp.get("packing") else "")
    )

    resume = spec.resume_from
    from_step, from_tokens = 0, 0  # where this worker starts: a resume point's state
    if resume:
        state = json.loads(Path(resume, "trainer_state.json").read_text())
        from_step, from_tokens = state["global_step"], int(state.get("num_input_tokens_seen", 0))
        name = os.path.basename(resume)
        reporter.log(f"resuming from {name}: optimizer, scheduler, RNG and data position")
        # Listed again in case the last attempt died between writing it and reporting it.
        reporter.checkpoint(name, int(name.rsplit("-", 1)[1]), resume, {})
    elif val_samples:
        trainer.evaluate()  # step 0: the loss the run starts from
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - started
    tokens = int(trainer.state.num_input_tokens_seen)  # all attempts: restored on resume
    here = tokens - from_tokens
    reporter.log(
        f"trained {trainer.state.global_step - from_step} steps in {seconds:.1f} s "
        f"({here / seconds if seconds else 0:.0f} tokens/s including eval and saves)"
        + (f", resumed at step {from_step}" if resume else "")
    )
    reporter.log(peak_memory(hw.cuda))
    if stop.stopped:
        reporter.log(
            f"canceled at step {trainer.state.global_step}; training usage {tokens} tokens"
        )
        return TrainResult(tokens, final, canceled=True, steps=trainer.state.global_step)
    if pause.paused:
        step = trainer.state.global_step
        reporter.log(f"paused at step {step}; resume point checkpoint-{step}")
        return TrainResult(tokens, final, canceled=False, steps=step, paused=True)
    if val_samples and report.last_eval_step != trainer.state.global_step:
        trainer.evaluate()
    if trainer.is_world_process_zero():  # data-parallel: one copy, saved by rank 0
        save_final(trainer.model, tok, final)
    reporter.log(f"final model saved: {final}")
    reporter.log(f"training usage {tokens} tokens")
    return TrainResult(tokens, final, canceled=False, steps=trainer.state.global_step)
