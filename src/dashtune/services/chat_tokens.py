"""Token counts of chat samples with a model's own tokenizer and chat template, in the API
process: the `tokenizers` library reads `tokenizer.json`, jinja2 renders the template the
way transformers' `apply_chat_template` does (sandboxed, trim/lstrip blocks, the
`{% generation %}` tag, `raise_exception`, special tokens as variables). No torch.

Counts are taken a batch at a time: one `encode_batch_fast` call per batch encodes on
the library's own threads, without the GIL and without the offsets nobody reads here.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from dashtune.domain.chat_masking import DEFAULT_CHAT_TEMPLATE


class TokenizerUnavailable(Exception):
    """The model directory has no usable tokenizer or chat template; the message says why."""


class _GenerationTag(Extension):
    """`{% generation %}...{% endgeneration %}` renders its body (it only marks tokens)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller: Any) -> str:
        return str(caller())


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = (
        lambda x, ensure_ascii=False, indent=None, separators=None, sort_keys=False: json.dumps(  # noqa: E501
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )
    )
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


class ChatTokens:
    """Counts tokens as the trainer does: the rendered chat, encoded without special tokens."""

    def __init__(self, model_dir: str) -> None:
        root = Path(model_dir)
        try:
            self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        except Exception as exc:
            raise TokenizerUnavailable(f"no tokenizer.json in {root}: {exc}") from None
        # The trainer encodes through transformers, which neither truncates nor pads a
        # sample: a truncation or padding that tokenizer.json asks for would hide its length.
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        try:
            config = json.loads((root / "tokenizer_config.json").read_text())
        except (OSError, ValueError):
            config = {}
        template = config.get("chat_template")
        jinja_file = root / "chat_template.jinja"
        if jinja_file.is_file():
            template = jinja_file.read_text()
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if not isinstance(template, str):
            template = DEFAULT_CHAT_TEMPLATE  # what the trainer renders such a model with
        self.template = _environment().from_string(template)
        # Jinja merges the globals into every render's context; as its default ChainMap
        # that merge costs more than rendering a short chat. A plain dict holds the same.
        self.template.globals = dict(self.template.globals)
        self.special = {
            key: text
            for key in ("bos_token", "eos_token", "pad_token", "unk_token")
            if (text := _token_text(config.get(key))) is not None
        }
        self.eos_id = (
            self.tokenizer.token_to_id(self.special.get("eos_token", ""))
            if self.special.get("eos_token")
            else None
        )

    def render(self, messages: list[dict[str, Any]]) -> str:
        return str(
            self.template.render(
                messages=messages,
                add_generation_prompt=False,
                tools=None,
                documents=None,
                **self.special,
            )
        )

    def chats(self, conversations: list[list[dict[str, Any]]]) -> list[int]:
        """Tokens of each conversation rendered by the chat template (SFT and DPO samples)."""
        texts = [self.render(messages) for messages in conversations]
        return [len(e) for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def texts(self, texts: list[str]) -> list[int]:
        """Tokens of each CPT document: encoded with special tokens, EOS appended if missing."""
        out = []
        for enc in self.tokenizer.encode_batch_fast(texts, add_special_tokens=True):
            ids = enc.ids
            missing_eos = self.eos_id is not None and (not ids or ids[-1] != self.eos_id)
            out.append(len(ids) + 1 if missing_eos else len(ids))
        return out


@lru_cache(maxsize=8)
def for_model(model_dir: str, _mtime: float) -> ChatTokens:
    """One parsed tokenizer per model directory (keyed by its mtime: rebuilt models reload)."""
    return ChatTokens(model_dir)


def load(model_dir: str) -> ChatTokens:
    path = Path(model_dir)
    try:
        mtime = (path / "tokenizer.json").stat().st_mtime
    except OSError:
        raise TokenizerUnavailable(f"no tokenizer.json in {path}") from None
    return for_model(str(path), mtime)
