"""What the trainer reports carries its steps: one total (the trainer's max_steps) and, in
checkpoint metrics, the step of the train values and the step of the eval loss."""

from __future__ import annotations

from tests.trainer.conftest import Job


def test_total_steps_never_drift(sft_job: Job) -> None:
    totals = {total for _, total, _ in sft_job.reporter.progress_calls}
    assert totals == {sft_job.reporter.progress_calls[-1][1]} and totals != {0}


def test_checkpoint_metrics_name_their_steps(sft_job: Job) -> None:
    evals = dict(sft_job.reporter.series("eval_loss"))
    losses = dict(sft_job.reporter.series("loss"))
    assert sft_job.reporter.checkpoints
    for _, step, _, metrics in sft_job.reporter.checkpoints:
        assert metrics["step"] <= step and metrics["loss"] == losses[metrics["step"]]
        assert metrics["eval_step"] <= step and metrics["eval_loss"] == evals[metrics["eval_step"]]
