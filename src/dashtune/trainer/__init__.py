"""The worker-side trainer: `run.train(spec, reporter)` turns a TrainSpec into a model.

Importing this package (and `spec`, `errors`) stays free of torch; the training stack is
imported by `run.train` inside the worker process.
"""

from dashtune.trainer.errors import TrainingError
from dashtune.trainer.spec import Reporter, TrainResult, TrainSpec

__all__ = ["Reporter", "TrainResult", "TrainSpec", "TrainingError"]
