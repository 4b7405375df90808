"""Resume points while training: atomic checkpoints, and pausing at a step boundary.

A checkpoint holds the model plus what `Trainer.train(resume_from_checkpoint=...)`
restores: optimizer, LR scheduler, RNG states, global step and the data position
(trainer_state.json). transformers writes it file by file, so a kill mid-write would
leave a directory that looks like a checkpoint; here it is written under a staging
directory and renamed into place once complete (store/resume_points.py reads them).
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import rotate_checkpoints

from dashtune.store.resume_points import STAGING
from dashtune.trainer.callbacks import any_rank


def atomic_checkpoints(trainer: Any) -> None:
    """Make `trainer` write each checkpoint to a staging dir and rename it into place."""
    save = trainer._save_checkpoint

    def save_atomically(model: Any, trial: Any) -> None:
        args = trainer.args
        root = args.output_dir
        staging = os.path.join(root, STAGING)
        name = f"checkpoint-{trainer.state.global_step}"
        # Data-parallel: every rank writes into the staging dir (rank 0 the model and
        # optimizer, each rank its RNG state); only rank 0 clears it before and publishes it
        # after, between barriers, so no rank writes into a dir already renamed.
        main = trainer.is_world_process_zero()
        if main:
            shutil.rmtree(staging, ignore_errors=True)  # what a killed attempt left half-written
        _barrier(args)
        args.output_dir = staging  # the Trainer saves (and rotates) under its output_dir
        try:
            save(model, trial)
        finally:
            args.output_dir = root
        _barrier(args)
        if not main:
            return
        target = os.path.join(root, name)
        if os.path.isdir(target):  # the same step saved again (a pause right after a save)
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
        shutil.rmtree(staging, ignore_errors=True)
        # By step number: the newest checkpoint, the resume point, is always kept.
        rotate_checkpoints(root, args.save_total_limit, use_mtime=False)

    trainer._save_checkpoint = save_atomically


def _barrier(args: Any) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if args.world_size > 1:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


class PauseOnFile(TrainerCallback):
    """Once `path` exists: save a resume point at this step boundary and stop.

    Like a cancel, the decision is all-reduced (`any_rank`): under data-parallel training
    a rank that paused alone would wait for the others in the checkpoint's barrier while
    they wait for it in the next step's gradient all-reduce."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.paused = False

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        asked = any_rank(bool(self.path and os.path.exists(self.path)))
        if asked and state.global_step < state.max_steps:
            self.paused = True
            control.should_training_stop = True
            control.should_save = True
