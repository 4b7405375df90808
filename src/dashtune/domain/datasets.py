"""Dataset rules (§4): what a valid JSONL line is for each training type.

Two checks use this module: the upload check (UTF-8, one JSON object a line) and the
job check before QUEUING (the line has the shape its training type needs). Messages
name the line so a user can fix the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from dashtune.domain.training import DPO_TYPES, TrainingType

ROLES = ("system", "user", "assistant")
DPO_SHAPE = (
    'the dpo format puts the prompt in "messages": {"messages": [{"role": "user", "content": '
    '"..."}], "chosen": "the preferred reply", "rejected": "the other reply"} (a reply may also '
    'be {"role": "assistant", "content": "..."})'
)


class DatasetError(ValueError):
    """A line that breaks the format; `line` is 1-based."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line = line
        self.problem = problem


def iter_objects(lines: Iterable[bytes]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Parse JSONL bytes line by line; blank lines are skipped, anything else must be an object."""
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise DatasetError(number, "is not valid UTF-8") from None
        if not text.strip():
            continue
        try:
            obj = json.loads(text.rstrip("\r\n"))  # columns then count within the line
        except json.JSONDecodeError as exc:
            raise DatasetError(number, f"is not valid JSON: {_json_problem(text, exc)}") from None
        except RecursionError:
            raise DatasetError(number, "is nested too deeply to be a training sample") from None
        except ValueError as exc:  # an integer of more than 4300 digits
            raise DatasetError(number, f"is not valid JSON ({exc})") from None
        if not isinstance(obj, dict):
            raise DatasetError(number, "must be a JSON object")
        yield number, obj


# json's messages, in words a user can act on; the column is kept.
_JSON_WORDS = {
    "Unterminated string starting at": "a string is not closed",
    "Invalid control character at": "a string is not closed before the end of the line, or "
    "holds a raw tab or line break (write \\t, \\n)",
    "Expecting value": "a value is missing",
    "Expecting ',' delimiter": "a ',' is missing between two items",
    "Expecting ':' delimiter": "a ':' is missing after a key",
    "Expecting property name enclosed in double quotes": "a key is not in double quotes, "
    "or a ',' has nothing after it",
    "Extra data": "more follows the end of the JSON value (one object a line)",
}


def _json_problem(text: str, exc: json.JSONDecodeError) -> str:
    """What is wrong with a line that does not parse, in words, and where."""
    words = _JSON_WORDS.get(exc.msg, exc.msg)
    line = text.rstrip("\r\n")
    where = f"at column {exc.colno}"  # 1-based character position in the line
    if exc.msg != "Extra data" and not line.rstrip().endswith(("}", "]")):
        return f"{words} {where}; the line ends before its object is closed (is it cut off?)"
    return f"{words} {where}"


def _check_message(number: int, where: str, msg: Any) -> None:
    if not isinstance(msg, dict):
        raise DatasetError(number, f"{where} must be an object with role and content")
    role = msg.get("role")
    if role not in ROLES:
        raise DatasetError(number, f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(msg.get("content"), str):
        raise DatasetError(number, f"{where}.content must be a string")
    if "loss_weight" in msg:
        weight = msg["loss_weight"]
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 1:
            raise DatasetError(number, f"{where}.loss_weight must be a number in [0, 1]")


def _check_messages(number: int, obj: dict[str, Any], need_assistant: bool) -> None:
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise DatasetError(number, "needs a non-empty 'messages' array")
    for i, msg in enumerate(messages):
        _check_message(number, f"messages[{i}]", msg)
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        raise DatasetError(number, "needs at least one assistant message")


def _check_reply(number: int, key: str, value: Any) -> None:
    if isinstance(value, str):
        return
    _check_message(number, key, value)
    if value["role"] != "assistant":
        raise DatasetError(number, f"{key}.role must be 'assistant'")


def check_line(number: int, obj: dict[str, Any], training_type: TrainingType) -> None:
    """Raise `DatasetError` unless `obj` is a valid sample for `training_type`."""
    if training_type is TrainingType.CPT:
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise DatasetError(number, "needs a non-empty string field 'text' (cpt format)")
        return
    if training_type in DPO_TYPES:
        if "messages" not in obj and "prompt" in obj:
            raise DatasetError(number, f"uses TRL's 'prompt' field; {DPO_SHAPE}")
        _check_messages(number, obj, need_assistant=False)
        for key in ("chosen", "rejected"):
            if key not in obj:
                raise DatasetError(number, f"needs '{key}' (dpo format)")
            _check_reply(number, key, obj[key])
        return
    _check_messages(number, obj, need_assistant=True)


def check_dataset(lines: Iterable[bytes], training_type: TrainingType) -> int:
    """Validate every line; return the number of samples."""
    count = 0
    from dashtune.domain.openai_formats import to_dashtune

    for number, obj in iter_objects(lines):
        check_line(number, to_dashtune(number, obj), training_type)
        count += 1
    if count == 0:
        raise DatasetError(1, "the file has no samples")
    return count
