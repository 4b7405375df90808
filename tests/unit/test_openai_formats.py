"""OpenAI's data formats and hyper-parameters, converted to dashtune's."""

from __future__ import annotations

import pytest

from dashtune.domain.datasets import DatasetError, check_line
from dashtune.domain.errors import InvalidParameter
from dashtune.domain.openai_formats import to_dashtune
from dashtune.domain.openai_shapes import dashtune_hyperparameters, parse_method
from dashtune.domain.training import TrainingType


def test_weight_becomes_loss_weight() -> None:
    row = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a", "weight": 0},
        ]
    }
    out = to_dashtune(1, row)
    assert out["messages"][1] == {"role": "assistant", "content": "a", "loss_weight": 0}
    check_line(1, out, TrainingType.SFT)
    with pytest.raises(DatasetError, match="weight must be 0 or 1"):
        to_dashtune(3, {"messages": [{"role": "assistant", "content": "a", "weight": 0.5}]})
    with pytest.raises(DatasetError, match="only allowed on assistant"):
        to_dashtune(3, {"messages": [{"role": "user", "content": "a", "weight": 1}]})


def test_preference_rows_become_dpo_rows() -> None:
    row = {
        "input": {"messages": [{"role": "user", "content": "q"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }
    out = to_dashtune(1, row)
    assert out == {
        "messages": [{"role": "user", "content": "q"}],
        "chosen": {"role": "assistant", "content": "good"},
        "rejected": {"role": "assistant", "content": "bad"},
    }
    check_line(1, out, TrainingType.DPO_FULL)
    with pytest.raises(DatasetError, match="line 2: non_preferred_output"):
        to_dashtune(2, {**row, "non_preferred_output": []})
    plain = {"messages": [{"role": "user", "content": "q"}], "chosen": "a", "rejected": "b"}
    assert to_dashtune(1, plain) is plain


def test_hyperparameters_map_auto_to_defaults_and_scale_the_learning_rate() -> None:
    m = parse_method({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3}}}, None)
    assert m.training_type is TrainingType.DPO_FULL
    mapped = dashtune_hyperparameters(
        {"n_epochs": "auto", "batch_size": 4, "learning_rate_multiplier": 3, "beta": 0.3}, 5, 1e-5
    )
    assert mapped == {
        "batch_size": 4,
        "learning_rate": pytest.approx(3e-5),
        "dpo_beta": 0.3,
        "seed": 5,
    }
    with pytest.raises(InvalidParameter, match="beta"):
        parse_method({"type": "supervised"}, {"beta": 0.1})
    with pytest.raises(InvalidParameter, match="does not fit"):
        parse_method({"type": "supervised"}, None, "dpo_lora")
    assert parse_method(None, None, "efficient_sft").training_type is TrainingType.EFFICIENT_SFT
