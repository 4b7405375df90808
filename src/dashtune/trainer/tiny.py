"""The built-in model `dashtune-tiny`: a ~100k-parameter random Qwen3 built offline.

It exists so the whole service (training, export, serving) runs and is tested without
downloading weights. Everything is generated from fixed seeds, so two builds give the
same bytes, and a build lands with one atomic rename, so concurrent callers are safe.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import threading
import time
from typing import Any

# Assistant content and its <|im_end|> sit inside {% generation %} so TRL's assistant-only
# loss can find them; the markers render nothing, so the same template serves inference.
CHATML_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 384
_BUILD_LOCK = threading.Lock()  # the init seeds torch's global RNG: one build at a time per process
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

_WORDS = [
    "the",
    "a",
    "an",
    "of",
    "to",
    "and",
    "in",
    "is",
    "it",
    "you",
    "that",
    "he",
    "was",
    "for",
    "on",
    "are",
    "with",
    "as",
    "his",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "hot",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "each",
    "she",
    "which",
    "do",
    "their",
    "time",
    "if",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "her",
    "long",
    "make",
    "thing",
    "see",
    "him",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "go",
    "come",
    "did",
    "number",
    "sound",
    "no",
    "most",
    "people",
    "my",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "may",
    "down",
    "side",
    "been",
    "now",
    "find",
    "reverse",
    "upper",
    "lower",
    "count",
    "letters",
    "answer",
    "question",
    "hello",
    "world",
    "model",
    "train",
    "data",
    "text",
    "please",
    "thanks",
    "yes",
]


def _corpus(seed: int = 1, n: int = 2000) -> list[str]:
    """ChatML-shaped text for the tokenizer: short tasks on letters and plain sentences."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 7)))
        sentence = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12)))
        task, answer = rng.choice(
            [
                (f"reverse {word}", word[::-1]),
                (f"upper {word}", word.upper()),
                (f"count {word}", str(len(word))),
                (sentence, sentence.capitalize() + "."),
            ]
        )
        lines.append(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            f"<|im_start|>user\n{task}<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>\n"
        )
    return lines


def is_tiny_model(path: str) -> bool:
    """True when `path` holds a complete model (the last file written is in place)."""
    return all(os.path.isfile(os.path.join(path, f)) for f in REQUIRED_FILES)


def build_tokenizer(
    special_tokens: list[str] | None = None,
    eos: str = "<|im_end|>",
    pad: str = "<|endoftext|>",
    chat_template: str | None = CHATML_TEMPLATE,
    bos: str | None = None,
) -> Any:
    """The tiny model's seeded byte-level BPE tokenizer; other special tokens and templates
    make the look-alikes of other model families that the chat-template tests train."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=VOCAB_SIZE,
            special_tokens=special_tokens or SPECIAL_TOKENS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token=eos,
        pad_token=pad,
        bos_token=bos,
        chat_template=chat_template,
        model_max_length=256,
    )


def save_tiny(tok: Any, path: str) -> None:
    """A tiny-sized random Qwen3 on `tok`, saved with it to `path`."""
    save_random_qwen3(
        tok,
        path,
        hidden=64,
        intermediate=128,
        layers=2,
        heads=4,
        kv_heads=2,
        head_dim=16,
        max_positions=256,
    )


def _build(path: str) -> None:
    save_tiny(build_tokenizer(), path)


def save_random_qwen3(
    tok: Any,
    path: str,
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    max_positions: int,
) -> None:
    """A seeded random-init Qwen3 of the given size on `tok`, saved with it to `path`
    (the tiny model, and the larger model of the serving benchmark)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    # Seed a private generator state so building never disturbs the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen3ForCausalLM(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)


def ensure_tiny_model(path: str) -> str:
    """Build `dashtune-tiny` into `path` unless it is already there; return `path`."""
    path = os.path.abspath(path)
    if is_tiny_model(path):
        return path
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", dir=parent)
    try:
        with _BUILD_LOCK:
            _build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the model is shared with serving
        if not is_tiny_model(tmp):
            # A data-parallel rank other than 0: transformers writes no weights there (only
            # rank 0 saves), so never publish this copy; rank 0's appears instead.
            _wait_for(path)
            return path
        try:
            os.rename(tmp, path)  # atomic; replaces an empty dir, fails on a non-empty one
        except OSError:
            if not is_tiny_model(path):  # not a concurrent builder that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _wait_for(path: str, timeout: float = 600.0) -> None:
    """Until another process has published a complete tiny model at `path`."""
    deadline = time.monotonic() + timeout
    while not is_tiny_model(path):
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the built-in model at {path} did not appear within {timeout:.0f} s"
            )
        time.sleep(0.5)
