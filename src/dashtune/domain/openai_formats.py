"""OpenAI's fine-tuning data formats, converted to dashtune's rows (§4) when read.

Supervised rows are chat `messages` whose assistant messages may carry `weight` (0 or 1):
it becomes dashtune's `loss_weight`. Preference rows are
`{"input": {"messages": [...]}, "preferred_output": [msg], "non_preferred_output": [msg]}`:
they become `{"messages", "chosen", "rejected"}`. Other rows pass unchanged, so a file
in either format trains through either API.
"""

from __future__ import annotations

from typing import Any

from dashtune.domain.datasets import DatasetError

PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")


def _weighted(number: int, messages: list[Any]) -> list[Any]:
    out = []
    for i, msg in enumerate(messages):
        if isinstance(msg, dict) and "weight" in msg and "loss_weight" not in msg:
            weight = msg["weight"]
            if msg.get("role") != "assistant":
                raise DatasetError(number, f"messages[{i}].weight is only allowed on assistant")
            if isinstance(weight, bool) or weight not in (0, 1):
                raise DatasetError(number, f"messages[{i}].weight must be 0 or 1")
            msg = {k: v for k, v in msg.items() if k != "weight"} | {"loss_weight": weight}
        out.append(msg)
    return out


def _reply(number: int, obj: dict[str, Any], key: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, list) or not value:
        raise DatasetError(number, f"{key} must be a non-empty array with one assistant message")
    return value[-1]


def to_dashtune(number: int, obj: dict[str, Any]) -> dict[str, Any]:
    """The dashtune row for an OpenAI-format row (line `number`); other rows unchanged."""
    if any(key in obj for key in PREFERENCE_KEYS):
        source = obj.get("input")
        if not isinstance(source, dict):
            raise DatasetError(number, "input must be an object with 'messages' (dpo format)")
        return {
            "messages": source.get("messages"),
            "chosen": _reply(number, obj, "preferred_output"),
            "rejected": _reply(number, obj, "non_preferred_output"),
        }
    messages = obj.get("messages")
    if isinstance(messages, list) and any(isinstance(m, dict) and "weight" in m for m in messages):
        return {**obj, "messages": _weighted(number, messages)}
    return obj
