"""Continued pre-training: plain causal LM loss on every token of `{"text": ...}` samples.

The trainer is the SFT one (sft.build_trainer); only the encoding differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Sample = dict[str, Any]


def text_encoder(tok: Any) -> Callable[[Sample], tuple[Sample, int] | None]:
    """Tokenize the text and end it with EOS so documents teach the model where to stop."""
    eos = tok.eos_token_id

    def encode(row: Sample) -> tuple[Sample, int] | None:
        ids: list[int] = tok(row["text"], add_special_tokens=True)["input_ids"]
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        if len(ids) < 2:
            return None
        return {"input_ids": ids, "labels": list(ids)}, len(ids)

    return encode
