"""The file ids of a create body (domain/ids.py), read alike by create and the estimate."""

from __future__ import annotations

from typing import Any

import pytest

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.ids import file_id_list


@pytest.mark.parametrize(
    ("value", "ids"),
    [(None, []), ("f1", ["f1"]), ([" f1 ", "f2"], ["f1", "f2"]), ([], [])],
)
def test_file_ids_are_read_as_a_list(value: Any, ids: list[str]) -> None:
    assert file_id_list(value, "training_file_ids") == ids


@pytest.mark.parametrize("value", [3, {"id": "f1"}, ["f1", 2], [" "], ["f\x00"]])
def test_anything_else_is_a_400_naming_the_field(value: Any) -> None:
    with pytest.raises(InvalidParameter, match="training_file_ids"):
        file_id_list(value, "training_file_ids")
