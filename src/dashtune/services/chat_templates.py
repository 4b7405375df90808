"""Checking a model's chat template before a chat job runs: can its assistant tokens be masked?

The scheduler runs this while it validates a PENDING job, in its own process, which must
not import transformers (seconds of import per check, and torch with it). So the template
is read from the model's files and rendered with jinja2 in an environment set up as
transformers sets up its own (`_compile_jinja_template`: sandboxed, trim_blocks,
lstrip_blocks, loopcontrols, a non-escaping `tojson`, `raise_exception`, `strftime_now`).
The trainer masks with the same rules (domain.chat_masking) on transformers' rendering and
re-checks every row, so a difference between the two renderers cannot train wrong tokens:
at worst the job fails in the worker, before the weights load.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dashtune.domain.chat_masking import (
    DEFAULT_CHAT_TEMPLATE,
    Render,
    TemplateError,
    assistant_spans,
    has_generation_markers,
)

_SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` renders its body (transformers tracks it)."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _token(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken as saved by older tokenizers
        value = value.get("content")
    return value if isinstance(value, str) else None


def read_template(model_dir: Path) -> tuple[str | None, dict[str, str]]:
    """The model's chat template (None: it has none) and its special tokens by name."""
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        config = json.loads((model_dir / "tokenizer_config.json").read_text())
    tokens = {k: t for k in _SPECIAL if (t := _token(config.get(k))) is not None}
    jinja_file = model_dir / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(), tokens
    template = config.get("chat_template")
    if isinstance(template, list):  # named variants: the trainer renders the default one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return (template if isinstance(template, str) and template else None), tokens


@cache
def _trl_training_templates() -> frozenset[str]:
    """Templates TRL ships a marked training copy of (`X.jinja` next to `X_training.jinja`).

    Read from TRL's package files without importing it (TRL imports transformers).
    """
    spec = importlib.util.find_spec("trl")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    folder = Path(next(iter(spec.submodule_search_locations))) / "chat_templates"
    return frozenset(
        p.read_text(encoding="utf-8")
        for p in folder.glob("*.jinja")
        if (folder / f"{p.stem}_training.jinja").is_file()
    )


def renderer(template: str, tokens: dict[str, str]) -> Render:
    """Render conversations with `template` as transformers' apply_chat_template does."""
    compiled = _environment().from_string(template)

    def render(messages: list[dict[str, Any]], prompt: bool) -> str:
        return compiled.render(messages=messages, add_generation_prompt=prompt, **tokens)

    return render


def check(template: str | None, tokens: dict[str, str], rows: Iterable[dict[str, Any]]) -> None:
    """Raise `TemplateError` unless the trainer can mask assistant tokens in these rows."""
    template = template or DEFAULT_CHAT_TEMPLATE
    if has_generation_markers(template) or template in _trl_training_templates():
        return
    try:
        render = renderer(template, tokens)
    except jinja2.exceptions.TemplateError as exc:
        raise TemplateError(f"the chat template is not valid Jinja: {exc}") from None
    for row in rows:
        messages = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
        assistant_spans(render, messages)
