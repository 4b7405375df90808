"""Which part of a rendered conversation is the assistant's: the rules for any chat template.

SFT trains only on assistant tokens. A template marks them in one of two ways:

- `{% generation %}` markers around each assistant turn (TRL's convention), or
- prefix consistency: rendering the conversation up to an assistant message (with the
  generation prompt) and through it gives prefixes of the whole rendering. The assistant
  message is then the text between the two, up to its last non-whitespace character
  (the turn's end marker, e.g. `<|im_end|>` or `<|eot_id|>`, is trained; the newline
  after it is not).

A template that does neither cannot be masked. The rules are plain string work with no
I/O: the scheduler checks a job's data with them before any worker starts (rendering with
jinja2 alone) and the trainer masks with them (rendering with transformers).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

# Models without a chat template get ChatML. Each assistant turn also ends with the
# tokenizer's eos token (when that is not <|im_end|> already), so a model whose vocabulary
# has no <|im_end|> token still learns to stop where generation stops: at eos.
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' }}"
    "{%- if message['role'] == 'assistant' and eos_token and eos_token != '<|im_end|>' %}"
    "{{- eos_token }}{%- endif %}{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

_GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")

# (messages, add_generation_prompt) -> the rendered text
Render = Callable[[list[dict[str, Any]], bool], str]


class TemplateError(ValueError):
    """The chat template cannot mark which tokens are the assistant's; the message says why."""


def has_generation_markers(template: str) -> bool:
    """True when the template wraps assistant turns in `{% generation %}` blocks."""
    return bool(_GENERATION_MARKER.search(template))


def _excerpt(text: str, at: int) -> str:
    return repr(text[max(0, at - 20) : at + 20])


def _mismatch(prefix: str, whole: str) -> int:
    """The first character where `prefix` and `whole` differ."""
    for i, (a, b) in enumerate(zip(prefix, whole, strict=False)):
        if a != b:
            return i
    return min(len(prefix), len(whole))


def _render(render: Render, messages: list[dict[str, Any]], prompt: bool) -> str:
    try:
        return render(messages, prompt)
    except Exception as exc:  # jinja2 and raise_exception() in templates raise many types
        raise TemplateError(f"the chat template fails to render a conversation: {exc}") from None


def assistant_spans(
    render: Render, messages: list[dict[str, Any]]
) -> tuple[str, list[tuple[int, int]]]:
    """The whole rendering and the [start, end) characters of each assistant message in it.

    Raises `TemplateError` naming the message and the position where rendering the
    conversation in parts disagrees with rendering it whole.
    """
    whole = _render(render, messages, False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(render, messages[:i], True)
        through = _render(render, messages[: i + 1], False)
        for part, name in ((before, "up to"), (through, "through")):
            if not whole.startswith(part):
                at = _mismatch(part, whole)
                raise TemplateError(
                    "the chat template does not render conversations prefix-consistently: "
                    f"the conversation rendered {name} message {i + 1} ({message['role']}) "
                    f"differs at character {at} from the whole conversation "
                    f"({_excerpt(part, at)} vs {_excerpt(whole, at)}), so the assistant's "
                    "tokens cannot be located; add {% generation %} markers to the template "
                    "(docs/models.md)"
                )
        if not through.startswith(before):
            raise TemplateError(
                "the chat template's generation prompt (add_generation_prompt) is not how it "
                f"renders assistant message {i + 1}; the assistant's tokens cannot be located"
            )
        end = len(through.rstrip())
        if end <= len(before) and message["content"].strip():
            raise TemplateError(
                f"the chat template renders nothing for assistant message {i + 1}; "
                "the assistant's tokens cannot be located"
            )
        spans.append((len(before), max(end, len(before))))
    return whole, spans


def token_runs(
    offsets: Sequence[tuple[int, int]], spans: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """[start, end) token indices of each character span: the tokens that overlap it."""
    runs = []
    for lo, hi in spans:
        inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < hi and b > lo]
        runs.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    return runs
