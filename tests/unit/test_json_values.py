"""What a stored JSON value may hold (domain/json_values.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.json_values import check_json_value


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ({"a": float("nan")}, "body.a must be a finite number"),
        ({"a": [1, float("inf")]}, "body.a[1]"),
        ({"a": "x\ud800"}, "lone UTF-16 surrogate"),
        ({"a\x00": 1}, "NUL"),
        ({"a": "b\x00c"}, "NUL"),
        ({"n": 10**400}, "64-bit"),
        ({"n": -(2**63) - 1}, "64-bit"),
        (json.loads("[" * 33 + "]" * 33), "nested more than 32"),
        ({"a": object()}, "not a JSON value"),
    ],
)
def test_unstorable_values_name_where_they_are(value: Any, words: str) -> None:
    with pytest.raises(InvalidParameter) as err:
        check_json_value(value, "body")
    assert words in err.value.message


def test_storable_values_pass_even_very_deep_ones_are_refused_without_recursion() -> None:
    check_json_value({"a": [1, 2.5, "ü", None, True, {"b": 2**63 - 1}]}, "body")
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidParameter):
        check_json_value(deep, "body")
