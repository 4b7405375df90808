"""Reading, validating, splitting and encoding training data (no training here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dashtune.trainer.data import encode_all, read_rows, split_validation, validation_size
from dashtune.trainer.errors import TrainingError
from tests.trainer.tasks import sft_row, write_jsonl


@pytest.mark.parametrize(
    ("n", "split", "cap", "expected"),
    [
        (1, 0.8, 1000, 0),
        (2, 0.8, 1000, 1),
        (10, 0.8, 1000, 2),
        (100, 0.8, 1000, 20),
        (100, 0.8, 5, 5),
        (10, 0.5, 1000, 5),
        (3, 0.01, 1000, 2),
    ],
)
def test_validation_size(n: int, split: float, cap: int, expected: int) -> None:
    assert validation_size(n, split, cap) == expected


def test_split_is_deterministic_and_disjoint() -> None:
    items = list(range(50))
    train, val = split_validation(items, 0.8, 1000, seed=7)
    assert (train, val) == split_validation(items, 0.8, 1000, seed=7)
    assert len(val) == 10 and sorted(train + val) == items


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('{"messages": [{"role": "user", "content": "hi"}]}', "at least one assistant message"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}', "role must be one of"),
    ],
)
def test_invalid_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "mydata.jsonl"
    good = write_jsonl(tmp_path / "x.jsonl", [sft_row("abc"), sft_row("defg")])
    path.write_text(Path(good).read_text() + line + "\n")
    with pytest.raises(TrainingError) as exc:
        list(read_rows([good, str(path)], "sft"))
    assert exc.value.code == "InvalidDataset"
    assert "mydata.jsonl" in exc.value.message and "line 3" in exc.value.message
    assert problem in exc.value.message


def test_rows_stream_through_encoding_without_all_being_held(tmp_path: Path) -> None:
    """Reading and encoding a 12 MB file peaks far below the file's parsed size."""
    import tracemalloc

    long = "x" * 2000
    rows = [sft_row(f"{i} {long}") for i in range(6000)]
    path = write_jsonl(tmp_path / "big.jsonl", rows)
    size = Path(path).stat().st_size
    assert size > 12e6
    tracemalloc.start()
    try:
        enc = encode_all(read_rows([path], "sft"), lambda row: ({"n": 1}, 1), max_length=10)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(enc.samples) == 6000
    assert peak < size / 8, f"peak {peak / 1e6:.1f} MB reading a {size / 1e6:.1f} MB file"


def test_weights_follow_messages(tiny_model: str) -> None:
    """Each assistant message's tokens carry its loss_weight; the rest carry prompt_loss."""
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import chat_encoder

    tok = load_tokenizer(tiny_model)
    row: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "reverse abc"},
            {"role": "assistant", "content": "cba", "loss_weight": 0.5},
            {"role": "user", "content": "reverse hij"},
            {"role": "assistant", "content": "jih"},
        ]
    }
    encoded = chat_encoder(tok, prompt_loss=0.1)(row)
    assert encoded is not None
    sample, length = encoded
    ids, weights, labels = sample["input_ids"], sample["loss_weights"], sample["labels"]
    assert length == len(ids) == len(weights) == len(labels)
    by_weight = {
        w: tok.decode([t for t, x in zip(ids, weights, strict=True) if x == w])
        for w in set(weights)
    }
    assert by_weight[0.5] == "cba<|im_end|>"
    assert by_weight[1.0] == "jih<|im_end|>"
    assert "reverse abc" in by_weight[0.1] and "cba" not in by_weight[0.1]
    assert all(lab == -100 for lab, w in zip(labels, weights, strict=True) if w == 0)

    untrained = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "x", "loss_weight": 0},
        ]
    }
    assert chat_encoder(tok, prompt_loss=0.0)(untrained) is None
    assert chat_encoder(tok, prompt_loss=0.2)(untrained) is not None
