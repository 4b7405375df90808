"""Helpers for the serving tests: tiny memorisable tasks, deployment waits, the serving
process's own stats (read from the address the supervisor writes to the data dir)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from dashtune.serving.protocol import TOKEN_HEADER
from tests.conftest import Server
from tests.e2e.conftest import words

# Jobs that make the tiny model answer one fixed string to any prompt: a few seconds of
# training at a high learning rate (a 100k-parameter random model memorises, it does not
# generalise; that is all these tests need to tell models apart).
HP_COMMON = {
    "batch_size": 8,
    "max_length": 64,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0,
    "eval_steps": 1000,
    "logging_steps": 4,
    "save_strategy": "steps",
    "save_steps": 1000,
    "split": 0.9,
}
TASKS: dict[str, dict[str, Any]] = {
    # name: the answer it learns, its training type and hyper-parameters
    "lora_z": {
        "answer": "zzz",
        "type": "efficient_sft",
        "hp": {"n_epochs": 6, "learning_rate": 3e-2, "lora_dropout": 0.0},
    },
    "lora_q": {
        "answer": "qqq",
        "type": "efficient_sft",
        "hp": {"n_epochs": 6, "learning_rate": 3e-2, "lora_dropout": 0.0},
    },
    "full_x": {"answer": "xyx", "type": "sft", "hp": {"n_epochs": 6, "learning_rate": 1e-2}},
}


def constant_answer_rows(answer: str, n: int = 32) -> list[dict[str, Any]]:
    return [
        {"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": answer}]}
        for w in words(n, seed=1)
    ]


def write_catalog(path: Path, broken_dir: Path) -> Path:
    """The tiny model, plus a base model whose weights do not exist (its deploy FAILS)."""
    path.write_text(
        "models:\n"
        "  dashtune-tiny:\n    source: builtin:tiny\n"
        f"  broken-base:\n    source: {broken_dir}\n"
    )
    return path


def serving_state(server: Server) -> dict[str, Any]:
    """{pid, url, token} of the serving process, as the supervisor wrote them."""
    return dict(json.loads((server.data_dir / "serving.json").read_text()))


def serving_stats(server: Server) -> dict[str, Any]:
    state = serving_state(server)
    r = httpx.get(state["url"] + "/stats", headers={TOKEN_HEADER: state["token"]}, timeout=10)
    r.raise_for_status()
    return dict(r.json())


def wait_deployment(
    c: httpx.Client, name: str, want: tuple[str, ...] = ("RUNNING",), timeout: float = 90
) -> dict[str, Any]:
    """Poll until the deployment is in `want` with its full capacity ready (for RUNNING)."""
    deadline = time.monotonic() + timeout
    while True:
        dep = c.get(f"/deployments/{name}").json()["output"]
        settled = dep["status"] != "RUNNING" or dep["ready_capacity"] == dep["capacity"]
        if dep["status"] in want and settled:
            return dict(dep)
        assert dep["status"] != "FAILED" or "FAILED" in want, dep
        assert time.monotonic() < deadline, dep
        time.sleep(0.2)


def process_maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()
