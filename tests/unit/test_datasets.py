from __future__ import annotations

import json

import pytest

from dashtune.domain.datasets import DatasetError, check_dataset
from dashtune.domain.training import TrainingType


def lines(*objs: object) -> list[bytes]:
    return [(json.dumps(o) + "\n").encode() for o in objs]


SFT = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
DPO = {
    "messages": [{"role": "user", "content": "q"}],
    "chosen": {"role": "assistant", "content": "a"},
    "rejected": "b",
}


def test_valid_files() -> None:
    assert check_dataset(lines(SFT, SFT), TrainingType.SFT) == 2
    assert check_dataset(lines(DPO), TrainingType.DPO_FULL) == 1
    assert check_dataset(lines({"text": "x"}) + [b"\n"], TrainingType.CPT) == 1


@pytest.mark.parametrize(
    ("rows", "tt", "line", "word"),
    [
        ([SFT, {"messages": [{"role": "user", "content": "q"}]}], TrainingType.SFT, 2, "assistant"),
        ([{"messages": [{"role": "bot", "content": "q"}]}], TrainingType.SFT, 1, "role"),
        ([{"messages": [{"role": "assistant", "content": 3}]}], TrainingType.SFT, 1, "content"),
        (
            [{"messages": [{"role": "assistant", "content": "a", "loss_weight": 2}]}],
            TrainingType.SFT,
            1,
            "loss_weight",
        ),
        ([SFT], TrainingType.DPO_LORA, 1, "chosen"),
        ([{"text": ""}], TrainingType.CPT, 1, "text"),
    ],
)
def test_bad_lines_are_named(rows: list, tt: TrainingType, line: int, word: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(DatasetError, match=word) as info:
        check_dataset(lines(*rows), tt)
    assert info.value.line == line


def test_not_json_and_not_utf8() -> None:
    with pytest.raises(DatasetError, match="JSON"):
        check_dataset([b"{\n"], TrainingType.SFT)
    with pytest.raises(DatasetError, match="UTF-8"):
        check_dataset([b'{"text": "\xff"}\n'], TrainingType.CPT)
    with pytest.raises(DatasetError, match="no samples"):
        check_dataset([b"\n"], TrainingType.CPT)


def test_trl_style_preference_rows_are_refused_with_the_expected_shape() -> None:
    import pytest

    from dashtune.domain.datasets import DatasetError, check_line
    from dashtune.domain.training import TrainingType

    row = {"prompt": "reverse abc", "chosen": "cba", "rejected": "abc"}
    with pytest.raises(DatasetError) as exc:
        check_line(4, row, TrainingType.DPO_LORA)
    assert "line 4: uses TRL's 'prompt' field" in str(exc.value)
    assert '"messages": [{"role": "user"' in str(exc.value) and '"chosen"' in str(exc.value)
