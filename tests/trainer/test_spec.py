"""The scheduler-facing side of the trainer: JSON round trip, and no torch on import."""

from __future__ import annotations

import subprocess
import sys

from dashtune.trainer import TrainingError, TrainSpec
from tests.trainer.tasks import hyper_parameters


def test_spec_round_trips_through_json() -> None:
    spec = TrainSpec(
        job_id="ft-1",
        training_type="efficient_sft",
        model_path="/m",
        adapter_path="/a",
        training_files=["/t.jsonl"],
        validation_files=[],
        hyper_parameters=hyper_parameters("sft"),
        output_dir="/out",
        stop_file="/out/STOP",
    )
    assert TrainSpec.from_json(spec.to_json()) == spec
    assert spec.is_lora and not spec.is_dpo


def test_training_error_carries_code_and_message() -> None:
    err = TrainingError("InvalidDataset", "file 'a.jsonl' line 3: is not valid JSON")
    assert (err.code, err.message) == ("InvalidDataset", "file 'a.jsonl' line 3: is not valid JSON")


def test_scheduler_side_imports_do_not_load_torch() -> None:
    code = (
        "import sys, dashtune.trainer, dashtune.trainer.spec, dashtune.trainer.errors, "
        "dashtune.trainer.run, dashtune.services.readiness, dashtune.services.chat_templates; "
        "print(sorted(m for m in ('torch', 'transformers', 'trl') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
