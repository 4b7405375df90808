"""Resume points on disk: checkpoints that also hold the trainer's full state.

The trainer writes each checkpoint into a staging directory and renames it into
`<job>/checkpoints/checkpoint-<step>` (trainer/resume.py), so a directory under that
name is complete. A checkpoint is a resume point while it still holds the optimizer,
scheduler and RNG state next to the model; that state is dropped when the job ends.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

STAGING = ".staging"  # under the checkpoints dir; never matches checkpoint-<step>
# Written by transformers.Trainer besides the model files; the model files are the export.
RESUME_FILES = (
    "optimizer.pt",
    "scheduler.pt",
    "scaler.pt",
    "rng_state*.pth",
    "trainer_state.json",
)
_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoints_dir(job_dir: Path) -> Path:
    return job_dir / "checkpoints"


def is_resume_point(path: Path) -> bool:
    """A complete checkpoint that still has what `resume_from_checkpoint` needs."""
    return all((path / f).is_file() for f in ("trainer_state.json", "optimizer.pt")) and any(
        path.glob("rng_state*.pth")
    )


def newest(job_dir: Path) -> tuple[str, int, Path] | None:
    """(name, step, path) of the newest resume point of a job, or None."""
    root = checkpoints_dir(job_dir)
    if not root.is_dir():
        return None
    found = []
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if m and d.is_dir() and is_resume_point(d):
            found.append((int(m.group(1)), d))
    if not found:
        return None
    step, path = max(found)
    return path.name, step, path


def drop_state(job_dir: Path) -> None:
    """The job ended: keep the model checkpoints, delete the (large) trainer state."""
    root = checkpoints_dir(job_dir)
    if not root.is_dir():
        return
    shutil.rmtree(root / STAGING, ignore_errors=True)
    for d in root.iterdir():
        if _NAME.match(d.name) and d.is_dir():
            for pattern in RESUME_FILES:
                for f in d.glob(pattern):
                    f.unlink(missing_ok=True)


def export_ignore() -> Any:
    """A `shutil.copytree(ignore=...)` that leaves the trainer state out of an export."""
    return shutil.ignore_patterns(*RESUME_FILES)
