"""A user's own model, as README and docs/models.md tell it: a local model directory whose
chat template has no generation markers, added to the catalog of a running server, trained
with the 1.x SDK (`mode=`) on the shipped example dataset, deployed, and called."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dashscope
import pytest
from dashscope import Deployments, Files, FineTunes, Generation

from tests.conftest import Server, start_server, stop_server

EXAMPLE = Path(__file__).parents[2] / "examples" / "reverse-words.jsonl"
PLAIN_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The README quickstart's hyper-parameters.
HP = {
    "n_epochs": 30,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "constant",
    "warmup_ratio": 0,
    "weight_decay": 0,
}


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory, database_factory: Any) -> Iterator[Server]:
    from dashtune.trainer.tiny import build_tokenizer, save_tiny

    root = tmp_path_factory.mktemp("own-model")
    save_tiny(build_tokenizer(chat_template=PLAIN_CHATML), str(root / "my-model"))
    catalog = root / "catalog.yaml"
    catalog.write_text("models:\n  dashtune-tiny: builtin:tiny\n")
    backend = os.environ.get("DASHTUNE_E2E_BACKEND", "sqlite")
    srv = start_server(
        root / "data",
        database_factory(backend, root),
        DASHTUNE_EXECUTOR="local",
        DASHTUNE_SERVING="true",
        DASHTUNE_CATALOG_PATH=str(catalog),
    )
    # The catalog is edited while the server runs, as docs/models.md shows.
    catalog.write_text(
        "models:\n  dashtune-tiny: builtin:tiny\n"
        f"  my-model:\n    source: {root / 'my-model'}\n    description: mine\n"
    )
    dashscope.base_http_api_url = srv.api
    yield srv
    stop_server(srv)


def _until(fetch: Any, done: tuple[str, ...], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (out := fetch()).output["status"] not in done:
        assert time.monotonic() < deadline, out
        time.sleep(1)
    return out.output


def test_train_deploy_and_call_a_model_with_a_plain_template(own: Server) -> None:
    key = own.key
    up = Files.upload(str(EXAMPLE), api_key=key)
    file_id = up.output["uploaded_files"][0]["file_id"]
    rsp = FineTunes.call(
        model="my-model", training_file_ids=[file_id], mode="sft", hyper_parameters=HP, api_key=key
    )
    assert rsp.status_code == 200, rsp
    job_id = rsp.output["job_id"]
    job = _until(lambda: FineTunes.get(job_id, api_key=key), ("SUCCEEDED", "FAILED"), 600)
    logs = FineTunes.logs(job_id, offset=0, line=1000, api_key=key).output["logs"]
    assert job["status"] == "SUCCEEDED", (job, logs[-5:])
    assert job["training_type"] == "sft" and job["base_model"] == "my-model"
    assert any("by rendering each conversation in prefixes" in line for line in logs)

    dep = Deployments.call(model=job["finetuned_output"], capacity=1, suffix="mine", api_key=key)
    name = dep.output["deployed_model"]
    state = _until(lambda: Deployments.get(name, api_key=key), ("RUNNING", "FAILED"), 300)
    assert state["status"] == "RUNNING", state
    first = json.loads(EXAMPLE.read_text().splitlines()[0])["messages"]
    r = Generation.call(
        model=name,
        messages=[first[0]],
        result_format="message",
        temperature=0,
        max_tokens=8,
        api_key=key,
    )
    assert r.status_code == 200, r
    assert r.output.choices[0].message.content == first[1]["content"]
