"""The whole user journey through the CLI with real training on the tiny model:
upload -> create -> `jobs watch` to SUCCEEDED -> deploy -> chat."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cli.shell import Cli, client_env
from tests.conftest import Server, start_server, stop_server
from tests.integration.helpers import write_jsonl

pytestmark = pytest.mark.e2e

# Small enough to train in seconds on a CPU, long enough to log loss and eval loss.
HYPER_PARAMETERS = [
    "n_epochs=2",
    "batch_size=8",
    "max_length=64",
    "learning_rate=5e-3",
    "eval_steps=2",
    "logging_steps=1",
    "lr_scheduler_type=constant",
    "warmup_ratio=0",
]


def reverse_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(7)
    words = ["".join(rng.choice("abcdefghij") for _ in range(4)) for _ in range(n)]
    return [
        {
            "messages": [
                {"role": "user", "content": f"reverse {w}"},
                {"role": "assistant", "content": w[::-1]},
            ]
        }
        for w in words
    ]


@pytest.fixture(scope="module")
def train_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """SQLite with the local executor: jobs really train in worker processes."""
    srv = start_server(tmp_path_factory.mktemp("cli-train"), "", DASHTUNE_EXECUTOR="local")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def trained(train_server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Upload, create and watch one LoRA job to its end, all through the CLI."""
    home = tmp_path_factory.mktemp("cli-home")
    cli = Cli(client_env(home, train_server.base, train_server.key))
    data = write_jsonl(home / "reverse.jsonl", reverse_rows(32))
    file_id = cli.json("files", "upload", str(data))[0]["file_id"]
    hp = [arg for pair in HYPER_PARAMETERS for arg in ("--hp", pair)]
    job = cli.json(
        "jobs", "create", "-m", "dashtune-tiny", "-t", file_id, "--type", "efficient_sft", *hp
    )
    watch = cli("jobs", "watch", job["job_id"], "--interval", "0.5", timeout=300)
    return {"cli": cli, "job": job, "watch": watch}


def test_upload_create_watch_to_success(trained: dict[str, Any]) -> None:
    cli, job, watch = trained["cli"], trained["job"], trained["watch"]
    assert watch.returncode == 0, (watch.stdout, watch.stderr)
    assert f"{job['job_id']} SUCCEEDED" in watch.stdout
    # The bar's last frame: 100%, the final step count, losses and throughput.
    for text in ("100%", "loss ", "eval ", "tok/s"):
        assert text in watch.stderr, (text, watch.stderr)
    assert re.search(r"step (\d+)/\1\b", watch.stderr), watch.stderr

    final = cli.json("jobs", "get", job["job_id"])
    assert final["status"] == "SUCCEEDED" and final["usage"] > 0
    points = cli.json("jobs", "metrics", job["job_id"])
    assert any("eval_loss" in p for p in points) and any("loss" in p for p in points)
    assert cli.json("jobs", "checkpoints", job["job_id"])[-1]["status"] == "SUCCEEDED"


def test_deploy_and_chat(trained: dict[str, Any]) -> None:
    cli, job = trained["cli"], trained["job"]
    assert trained["watch"].returncode == 0
    model = cli.json("jobs", "get", job["job_id"])["finetuned_output"]

    dep = cli.json("deployments", "create", model, "--suffix", "cli", "--wait", timeout=300)
    name = dep["deployed_model"]
    assert dep["status"] == "RUNNING" and name == f"{model}-cli"
    assert name in [d["deployed_model"] for d in cli.json("deployments", "list")["deployments"]]
    assert name in cli.ok("deployments", "list").stdout
    assert cli.json("deployments", "get", name)["model_name"] == model

    # A seeded sample is repeatable, so the streamed reply must equal the complete one
    # (greedy is no good here: the briefly trained tiny model ends its reply at once).
    ask = [
        "chat",
        name,
        "-m",
        "reverse abcd",
        "--max-tokens",
        "8",
        "--temperature",
        "1",
        "--seed",
        "3",
    ]
    completion = cli.json(*ask)
    assert completion["choices"][0]["message"]["role"] == "assistant"
    assert completion["usage"]["completion_tokens"] >= 1
    assert cli.ok(*ask).stdout == completion["choices"][0]["message"]["content"] + "\n"
    # Interactive mode reads turns from stdin until EOF: two turns, two replies, each ending
    # its line (/reset only clears the history).
    session = cli.ok("chat", name, "--max-tokens", "4", input="hello\n/reset\nreverse dcba\n")
    assert session.stdout.count("\n") == 2, session

    assert cli.json("deployments", "scale", name, "--capacity", "1")["capacity"] == 1
    cli.ok("deployments", "delete", name)
