"""The deployment state table, naming and capacity rules, and incremental detokenisation
with stop sequences (pure code: no server, no model)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dashtune.domain.deployments import (
    DeploymentAction,
    DeploymentStatus,
    can,
    check_capacity,
    deployed_name,
    transition,
)
from dashtune.domain.errors import InvalidParameter, UnsupportedOperation
from dashtune.serving.incremental import IncrementalText

A, S = DeploymentAction, DeploymentStatus


def test_happy_path_and_refusals() -> None:
    assert transition("d", S.PENDING, A.LOAD) is S.DEPLOYING
    assert transition("d", S.DEPLOYING, A.READY) is S.RUNNING
    assert transition("d", S.RUNNING, A.RELOAD) is S.DEPLOYING
    assert transition("d", S.RUNNING, A.DELETE) is S.DELETING
    assert can(S.FAILED, A.DELETE) and not can(S.FAILED, A.SCALE)
    with pytest.raises(UnsupportedOperation, match="FAILED.*deploy the model again"):
        transition("d", S.FAILED, A.SCALE)
    with pytest.raises(UnsupportedOperation, match="DELETING"):
        transition("d", S.DELETING, A.SCALE)


def test_names_and_capacity() -> None:
    assert deployed_name("m", "v1", "abcd") == "m-v1"
    assert deployed_name("m", None, "abcd") == "m-abcd"
    for bad in ("", "-x", "a/b", "x" * 65):
        with pytest.raises(InvalidParameter, match="suffix"):
            deployed_name("m", bad, "abcd")
    assert check_capacity(3) == 3 and check_capacity(2.0) == 2
    bad_values: tuple[object, ...] = (0, -1, 1.5, True, "2", None, 10**6)
    for value in bad_values:
        with pytest.raises(InvalidParameter, match="capacity"):
            check_capacity(value)


def _decoder(pieces: dict[int, str]) -> Callable[[list[int]], str]:
    return lambda ids: "".join(pieces[i] for i in ids)


def test_text_is_released_as_it_becomes_final() -> None:
    text = IncrementalText(_decoder({1: "he", 2: "llo", 3: " w"}))
    assert [text.push([i]) for i in (1, 2, 3)] == ["he", "llo", " w"]
    assert text.finish() == "" and text.text == "hello w"


def test_a_partial_character_waits_for_its_next_byte() -> None:
    # A byte-level decoder shows U+FFFD until the character is complete.
    text = IncrementalText(lambda ids: {1: "a\ufffd", 2: "aé"}[len(ids)])
    assert text.push([1]) == "a"
    assert text.push([2]) == "é"


def test_stop_sequences_are_cut_even_across_tokens() -> None:
    text = IncrementalText(_decoder({1: "ab", 2: "c#", 3: "#d", 4: "e"}), stops=["##"])
    assert text.push([1]) == "ab"
    assert text.push([2]) == "c"  # "#" could start the stop sequence: held back
    assert text.push([3]) == "" and text.stopped
    assert text.push([4]) == "" and text.finish() == "" and text.text == "abc"


def test_held_back_text_is_released_at_the_end() -> None:
    text = IncrementalText(_decoder({1: "x#"}), stops=["##"])
    assert text.push([1]) == "x"
    assert text.finish() == "#" and not text.stopped


def test_bytes_that_never_form_a_character_do_not_stall_the_stream() -> None:
    text = IncrementalText(lambda ids: "\ufffd" * len(ids))
    assert text.push([1]) == ""
    assert text.push([2]) == "\ufffd"
    assert text.finish() == "\ufffd"
