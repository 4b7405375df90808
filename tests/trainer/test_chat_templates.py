"""SFT on models whose chat template has no generation markers, or no template at all.

Each family is a tiny random model built locally (trainer.tiny) with its own special
tokens and template. The labels are checked against a mask made by hand: the conversation
encoded piece by piece, each piece flagged as trained or not.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dashtune.domain.chat_masking import DEFAULT_CHAT_TEMPLATE
from dashtune.trainer.errors import TrainingError
from dashtune.trainer.spec import TrainSpec
from tests.trainer.conftest import Job
from tests.trainer.tasks import words

PLAIN_CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA3 = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{- message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
# Marks the conversation's last message: rendered in parts, the text differs from whole.
UNMASKABLE = (
    "{%- for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    "{%- if loop.last %} [end]{% endif %}\n{% endfor %}"
    "{%- if add_generation_prompt %}assistant:{% endif %}"
)
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>"]
LLAMA_SPECIALS += ["<|end_header_id|>", "<|eot_id|>"]

FAMILIES: dict[str, dict[str, Any]] = {
    "chatml": {"chat_template": PLAIN_CHATML},
    "llama3": {
        "chat_template": LLAMA3,
        "special_tokens": LLAMA_SPECIALS,
        "eos": "<|eot_id|>",
        "pad": "<|end_of_text|>",
        "bos": "<|begin_of_text|>",
    },
    # No template, and an eos that is not <|im_end|>: the default ChatML adds eos to replies.
    "none": {"chat_template": None, "eos": "<|endoftext|>", "pad": "<|endoftext|>"},
    "unmaskable": {"chat_template": UNMASKABLE},
}


def _pieces(family: str) -> list[tuple[str, bool]]:
    """The conversation of ROW as (text, trained) pieces, written out for each template."""
    if family == "llama3":
        head = "<|start_header_id|>{}<|end_header_id|>\n\n"
        return [
            ("<|begin_of_text|>" + head.format("system") + "You reverse words.<|eot_id|>", False),
            (head.format("user") + "reverse abc<|eot_id|>" + head.format("assistant"), False),
            ("cba<|eot_id|>", True),
            (head.format("user") + "and hij<|eot_id|>" + head.format("assistant"), False),
            ("jih<|eot_id|>", True),
        ]
    end = "<|im_end|><|endoftext|>" if family == "none" else "<|im_end|>"
    return [
        ("<|im_start|>system\nYou reverse words.<|im_end|>\n", False),
        ("<|im_start|>user\nreverse abc<|im_end|>\n<|im_start|>assistant\n", False),
        ("cba" + end, True),
        ("\n<|im_start|>user\nand hij<|im_end|>\n<|im_start|>assistant\n", False),
        ("jih" + end, True),
        ("\n", False),
    ]


ROW = {
    "messages": [
        {"role": "system", "content": "You reverse words."},
        {"role": "user", "content": "reverse abc"},
        {"role": "assistant", "content": "cba"},
        {"role": "user", "content": "and hij"},
        {"role": "assistant", "content": "jih"},
    ]
}


@pytest.fixture(scope="module")
def family_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """`family_model(name)`: the dir of a tiny model of that family, built once."""
    from dashtune.trainer.tiny import build_tokenizer, save_tiny

    built: dict[str, str] = {}

    def get(name: str) -> str:
        if name not in built:
            path = str(tmp_path_factory.mktemp(f"family-{name}") / "model")
            save_tiny(build_tokenizer(**FAMILIES[name]), path)
            built[name] = path
        return built[name]

    return get


@pytest.mark.parametrize("family", ["chatml", "llama3", "none"])
def test_labels_are_exactly_the_assistant_tokens(
    family: str, family_model: Callable[[str], str]
) -> None:
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import chat_encoder

    tok = load_tokenizer(family_model(family))
    lines: list[str] = []
    encoded = chat_encoder(tok, prompt_loss=0.0, log=lines.append)(ROW)
    assert encoded is not None
    sample, _ = encoded
    ids, mask = [], []
    for text, trained in _pieces(family):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        mask += [trained] * len(piece)
    assert sample["input_ids"] == ids
    assert sample["labels"] == [t if m else -100 for t, m in zip(ids, mask, strict=True)]
    which = "the default ChatML template" if family == "none" else "the model's chat template"
    assert lines == [
        f"assistant tokens found with {which}, by rendering each conversation in prefixes"
    ]


def test_generation_markers_are_kept(tiny_model: str) -> None:
    """dashtune-tiny's template has {% generation %} markers: they decide, not the prefixes."""
    from dashtune.trainer.model import load_tokenizer
    from dashtune.trainer.sft import chat_encoder

    lines: list[str] = []
    chat_encoder(load_tokenizer(tiny_model), prompt_loss=0.0, log=lines.append)
    assert lines == [
        "assistant tokens found with the model's chat template, by {% generation %} markers"
    ]


@pytest.mark.parametrize("training_type", ["sft", "efficient_sft"])
@pytest.mark.parametrize("family", ["chatml", "llama3", "none"])
def test_trains_without_markers(
    family: str,
    training_type: str,
    family_model: Callable[[str], str],
    make_spec: Callable[..., TrainSpec],
    train_job: Callable[[TrainSpec], Job],
) -> None:
    from tests.trainer.tasks import sft_row

    spec = make_spec(
        training_type,
        rows=[sft_row(w) for w in words(12, 3)],
        model_path=family_model(family),
        n_epochs=1,
        batch_size=4,
    )
    job = train_job(spec)
    assert not job.result.canceled and job.result.usage_tokens > 0
    assert any(line.startswith("assistant tokens found with") for line in job.reporter.lines)
    saved = Path(job.result.final_path, "chat_template.jinja")
    # The output carries the template it was trained with, the model's own unchanged.
    assert saved.read_text() == (FAMILIES[family]["chat_template"] or DEFAULT_CHAT_TEMPLATE)


def test_unmaskable_template_fails_before_the_weights_load(
    family_model: Callable[[str], str], make_spec: Callable[..., TrainSpec]
) -> None:
    from dashtune.trainer.run import train
    from tests.trainer.conftest import RecordingReporter

    path = family_model("unmaskable")
    os.remove(os.path.join(path, "model.safetensors"))  # loading weights would fail loudly
    with pytest.raises(TrainingError) as exc:
        train(make_spec("sft", n=4, model_path=path), RecordingReporter())
    assert exc.value.code == "InvalidChatTemplate"
    assert (
        "prefix-consistently" in exc.value.message
        and "up to message 3 (assistant)" in exc.value.message
    )


@pytest.mark.parametrize("family", ["chatml", "llama3", "none", "unmaskable"])
def test_scheduler_check_renders_as_transformers_does(
    family: str, family_model: Callable[[str], str]
) -> None:
    """The scheduler renders with jinja2 alone; it must agree with apply_chat_template."""
    from dashtune.services import chat_templates
    from dashtune.trainer.model import load_tokenizer

    path = family_model(family)
    template, tokens = chat_templates.read_template(Path(path))
    assert template == FAMILIES[family]["chat_template"]
    tok = load_tokenizer(path)
    render = chat_templates.renderer(template or DEFAULT_CHAT_TEMPLATE, tokens)
    for prompt in (False, True):
        want = tok.apply_chat_template(
            ROW["messages"],
            tokenize=False,
            add_generation_prompt=prompt,
            chat_template=tok.chat_template or DEFAULT_CHAT_TEMPLATE,
        )
        assert render(ROW["messages"], prompt) == want
