"""Reading a job's JSONL files, dropping over-long samples and carving a validation split.

Encoding into tokens is per training type (sft.py, dpo.py, cpt.py); what is shared lives
here: line validation (the rules of domain.datasets, re-checked because files can change
between the API's check and the run), the max_length drop rule and the split rule.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from dashtune.domain.datasets import DatasetError, check_line, iter_objects
from dashtune.domain.openai_formats import to_dashtune
from dashtune.domain.training import TrainingType
from dashtune.trainer.errors import INVALID_DATASET, TrainingError

T = TypeVar("T")


def read_rows(paths: Iterable[str], training_type: str) -> Iterator[dict[str, Any]]:
    """Every sample of `paths`, validated for `training_type`, one at a time: a job's rows
    are never all in memory as JSON (only their encodings are); a bad line names file
    and line."""
    kind = TrainingType(training_type)
    for path in paths:
        name = os.path.basename(path)
        try:
            with open(path, "rb") as f:
                for number, raw in iter_objects(f):
                    obj = to_dashtune(number, raw)
                    check_line(number, obj, kind)
                    yield obj
        except DatasetError as exc:
            raise TrainingError(INVALID_DATASET, f"file '{name}' {exc}") from None
        except OSError as exc:
            raise TrainingError(INVALID_DATASET, f"file '{name}' cannot be read: {exc}") from None


@dataclass
class Encoded:
    """Samples ready for a trainer, and how many were dropped and why."""

    samples: list[dict[str, Any]]
    too_long: int = 0
    untrained: int = 0  # samples with no token carrying loss weight


def encode_all(
    rows: Iterable[dict[str, Any]],
    encode: Callable[[dict[str, Any]], tuple[dict[str, Any], int] | None],
    max_length: int,
) -> Encoded:
    """Encode each row; drop (never truncate) those longer than `max_length` tokens.

    `encode` returns the trainer sample and its token count, or None when the sample
    would train nothing (every token has loss weight 0).
    """
    out = Encoded([])
    for row in rows:
        encoded = encode(row)
        if encoded is None:
            out.untrained += 1
        elif encoded[1] > max_length:
            out.too_long += 1
        else:
            out.samples.append(encoded[0])
    return out


def validation_size(n: int, split: float, cap: int) -> int:
    """How many of `n` samples the auto-split holds out: round(n*(1-split)), capped, >=1 if n>=2."""
    if n < 2:
        return 0
    return max(1, min(round(n * (1 - split)), cap, n - 1))


def split_validation(
    samples: list[T], split: float, cap: int, seed: int
) -> tuple[list[T], list[T]]:
    """Shuffle with `seed` and hold out the validation part; returns (train, validation)."""
    order = list(samples)
    random.Random(seed).shuffle(order)
    k = validation_size(len(order), split, cap)
    return order[k:], order[:k]
