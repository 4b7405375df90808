"""The one error type the trainer raises for failures a user can act on.

No torch import here: the scheduler catches `TrainingError` and copies `code` and
`message` onto the job, so it must be importable without the training stack.
"""

from __future__ import annotations

INVALID_DATASET = "InvalidDataset"
INVALID_CHAT_TEMPLATE = "InvalidChatTemplate"  # the template cannot mark assistant tokens
MODEL_LOAD_ERROR = "ModelLoadError"
TRAINING_FAILED = "TrainingFailed"


class TrainingError(Exception):
    """A failure the job owner can fix (bad data, unloadable model); `code` is the job's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
