"""The built-in tiny model: deterministic, built once, and usable by transformers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dashtune.trainer.tiny import ensure_tiny_model


def test_build_is_deterministic_and_idempotent(tiny_model: str, tmp_path: Path) -> None:
    other = ensure_tiny_model(str(tmp_path / "again"))
    for name in sorted(os.listdir(tiny_model)):
        assert (Path(other) / name).read_bytes() == (Path(tiny_model) / name).read_bytes(), name
    stamp = os.stat(Path(other) / "model.safetensors").st_mtime_ns
    assert ensure_tiny_model(other) == other  # already there: not rebuilt
    assert os.stat(Path(other) / "model.safetensors").st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["again"]  # no temp dir left behind


def test_concurrent_builds_agree(tiny_model: str, tmp_path: Path) -> None:
    target = str(tmp_path / "shared" / "dashtune-tiny")
    with ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(ensure_tiny_model, [target, target]))
    assert paths == [target, target]
    for name in sorted(os.listdir(tiny_model)):
        assert (Path(target) / name).read_bytes() == (Path(tiny_model) / name).read_bytes(), name
    assert os.listdir(tmp_path / "shared") == ["dashtune-tiny"]


def test_tiny_model_has_training_chat_template(tiny_model: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert (tok.eos_token, tok.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert 300 <= len(tok) <= 400 and model.config.hidden_size == 64
    enc: Any = tok.apply_chat_template(
        [{"role": "user", "content": "reverse abc"}, {"role": "assistant", "content": "cba"}],
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    kept = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if m]
    assert tok.decode(kept) == "cba<|im_end|>"
