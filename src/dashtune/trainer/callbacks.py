"""Trainer callbacks: cooperative cancel, and turning trainer events into Reporter calls.

They run inside the training loop, so each step costs only a file-exists check and two
clock reads (under data-parallel training, plus one 1-element all-reduce per decision:
`any_rank`); everything else happens on logging, evaluation and save events.
"""

from __future__ import annotations

import os
import time
from typing import Any

from transformers import TrainerCallback

from dashtune.trainer.spec import Reporter

# Train-log keys worth keeping as metrics; TRL logs many more (entropy, logits, ...).
TRAIN_METRICS = (
    "loss",
    "learning_rate",
    "grad_norm",
    "epoch",
    "rewards/accuracies",
    "rewards/margins",
)


class StopOnFile(TrainerCallback):
    """Stop at the next step boundary once `path` exists, without saving or evaluating.

    Under data-parallel training every rank must stop at the same step (a rank left alone
    in a collective crashes or hangs): the decision is all-reduced with MAX each step.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.stopped = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        stop = any_rank(bool(self.path and os.path.exists(self.path)))
        if stop:
            self.stopped = True
            control.should_training_stop = True
            control.should_save = False
            control.should_evaluate = False


def any_rank(flag: bool) -> bool:
    """True on every rank when it is True on any (a no-op without torch.distributed).

    Every rank must call it at the same point of every step, whatever its own flag: a
    collective that one rank skips hangs the others. Rank 0 alone runs the heartbeat that
    writes the stop and pause files, and the other ranks may see a file a step later."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    import torch

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


class ReportCallback(TrainerCallback):
    """Forwards logs, metrics, progress and checkpoints of a run to a `Reporter`."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.total_steps = 0
        self.train_seconds = 0.0  # time inside optimizer steps only: not eval, save or logging
        self.last_eval_step: int | None = None
        self.latest: dict[str, float] = {}
        self._step_start = 0.0
        self._tokens_at_log = 0
        self._seconds_at_log = 0.0
        self._checkpoints: set[str] = set()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.total_steps = state.max_steps
        if os.path.isdir(args.output_dir):  # a resumed run: what earlier attempts saved
            self._checkpoints = {
                d for d in os.listdir(args.output_dir) if d.startswith("checkpoint-")
            }
        self.reporter.progress(state.global_step, self.total_steps, None)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        done = state.global_step >= self.total_steps
        self.reporter.progress(state.global_step, self.total_steps, 0.0 if done else None)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_start = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_seconds += time.perf_counter() - self._step_start

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs or "loss" not in logs:
            return  # eval logs are reported by on_evaluate, the end-of-train summary is not a step
        step = state.global_step
        tokens = state.num_input_tokens_seen
        seconds = self.train_seconds - self._seconds_at_log
        values = {k: float(logs[k]) for k in TRAIN_METRICS if k in logs}
        values["tokens_per_second"] = (tokens - self._tokens_at_log) / seconds if seconds else 0.0
        self._tokens_at_log, self._seconds_at_log = tokens, self.train_seconds
        self.latest.update(values, step=step)  # each value with its step (eval: eval_step)
        self.reporter.metrics(step, values)
        self.reporter.log(
            f"step {step}/{self.total_steps} loss={values['loss']:.4f} "
            f"lr={values.get('learning_rate', 0.0):.3g} tokens/s={values['tokens_per_second']:.0f}"
        )
        eta = self.train_seconds / step * (self.total_steps - step) if step else None
        self.reporter.progress(step, self.total_steps, eta)

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics or "eval_loss" not in metrics:
            return
        step = state.global_step
        self.last_eval_step = step
        loss = float(metrics["eval_loss"])
        self.latest.update(eval_loss=loss, eval_step=step)
        self.reporter.metrics(step, {"eval_loss": loss})
        self.reporter.log(f"eval step {step} eval_loss={loss:.4f}")

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The Trainer has saved checkpoint-<step> and rotated out what save_total_limit drops.
        name = f"checkpoint-{state.global_step}"
        path = os.path.join(args.output_dir, name)
        on_disk = {d for d in os.listdir(args.output_dir) if d.startswith("checkpoint-")}
        for gone in sorted(self._checkpoints - on_disk):
            self.reporter.checkpoint_removed(gone)
        self._checkpoints = on_disk
        self.reporter.checkpoint(name, state.global_step, path, dict(self.latest))
        self.reporter.log(f"checkpoint saved: {name}")
