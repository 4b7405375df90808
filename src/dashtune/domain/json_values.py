"""What a JSON value from a caller may hold before anything stores or echoes it.

A value that passes renders as strict JSON (no NaN/Infinity), encodes as UTF-8 (no lone
surrogates), fits every database's text and integer types (no NUL, integers within
64 bits) and is no deeper than `max_depth`. The API checks whole request bodies with it;
services check what they store, whichever transport brought it.
"""

from __future__ import annotations

import math
from typing import Any

from dashtune.domain.errors import InvalidParameter

INT64 = 2**63
DEFAULT_MAX_DEPTH = 32


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored or rendered as text, or None when it can."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone UTF-16 surrogate (not valid Unicode)"
    return None


def check_text(value: str, where: str) -> str:
    """`value` itself, or 400 InvalidParameter naming `where`."""
    problem = text_problem(value)
    if problem:
        raise InvalidParameter(f"{where} {problem}.")
    return value


def check_json_value(value: Any, where: str, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise InvalidParameter naming the first part of `value` that is not storable JSON.

    Iterative, so a value nested past Python's recursion limit is refused, not a crash.
    """
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if depth > max_depth:
            raise InvalidParameter(f"{path} is nested more than {max_depth} levels deep.")
        if isinstance(item, str):
            check_text(item, path)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -INT64 <= item < INT64:
                raise InvalidParameter(f"{path} is an integer outside the 64-bit range.")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidParameter(f"{path} must be a finite number, got {item!r}.")
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidParameter(f"{path} has a key that is not a string.")
                check_text(key, f"{path} key {key[:40]!a}")
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            for i, child in enumerate(item):
                stack.append((child, f"{path}[{i}]", depth + 1))
        else:
            raise InvalidParameter(f"{path} is not a JSON value.")
