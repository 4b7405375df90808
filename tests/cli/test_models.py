"""Your own model: `dashtune models list`, a catalog edited while the server runs, and
the jobs that cannot train failing in validation, before a worker could start, with why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.control_plane import start_control_plane, wait_status
from tests.cli.shell import Cli, client_env
from tests.conftest import Server, stop_server
from tests.integration.helpers import sft_rows, upload, write_jsonl

PLAIN_CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The last message renders differently: rendered in parts it is not a prefix of the whole.
UNMASKABLE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}"
    "{% if loop.last %} [end]{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
MISSING_REPO = "nobody/not-in-the-cache"


def _model_dir(path: Path, template: str | None) -> Path:
    """The tokenizer files of a model (the scheduler's check reads nothing else)."""
    path.mkdir(parents=True)
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    if template is not None:
        (path / "chat_template.jinja").write_text(template)
    return path


def _catalog(path: Path, models: dict[str, str]) -> None:
    body = {"models": {k: {"source": v} for k, v in models.items()}}
    path.write_text(json.dumps(body))  # YAML is a superset of JSON


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path, dict[str, str]]]:
    root = tmp_path_factory.mktemp("own-models")
    models = {
        "dashtune-tiny": "builtin:tiny",
        "my-chatml": str(_model_dir(root / "chatml", PLAIN_CHATML)),
        "my-untemplated": str(_model_dir(root / "untemplated", None)),
        "my-unmaskable": str(_model_dir(root / "unmaskable", UNMASKABLE)),
        "remote": MISSING_REPO,
        "gone": str(root / "no-such-dir"),
    }
    catalog = root / "catalog.yaml"
    _catalog(catalog, models)
    srv = start_control_plane(
        root / "data", DASHTUNE_CATALOG_PATH=str(catalog), HF_HOME=str(root / "hf-home")
    )
    yield srv, catalog, models
    stop_server(srv)


@pytest.fixture
def own_cli(own: tuple[Server, Path, dict[str, str]], tmp_path: Path) -> Cli:
    return Cli(client_env(tmp_path, own[0].base, own[0].key))


def _job(srv: Server, tmp_path: Path, model: str, **body: Any) -> str:
    with srv.http() as c:
        fid = upload(c, write_jsonl(tmp_path / "d.jsonl", sft_rows(3)))
        r = c.post("/fine-tunes", json={"model": model, "training_file_ids": [fid], **body})
        assert r.status_code == 200, r.text
        return str(r.json()["output"]["job_id"])


def _failed(srv: Server, job_id: str) -> dict[str, Any]:
    job = wait_status(srv, job_id, "FAILED")
    with srv.http() as c:
        logs = c.get(f"/fine-tunes/{job_id}/logs", params={"line": 1000}).json()["output"]
    assert not any("started" in line for line in logs["logs"]), logs  # no worker ran
    return job


def test_models_list_says_which_catalog_models_are_local(own_cli: Cli) -> None:
    listed = {m["model"]: m for m in own_cli.json("models", "list")}
    assert {
        k: listed[k]["available"] for k in ("dashtune-tiny", "my-chatml", "remote", "gone")
    } == {
        "dashtune-tiny": True,
        "my-chatml": True,
        "remote": False,
        "gone": False,
    }
    assert f"hf download {MISSING_REPO}" in listed["remote"]["weights"]
    text = own_cli.ok("models", "list").stdout
    assert "remote" in text and "LOCAL" in text and f"hf download {MISSING_REPO}" in text


def test_offline_missing_model_fails_with_the_command_that_fetches_it(
    own: tuple[Server, Path, dict[str, str]], tmp_path: Path, own_cli: Cli
) -> None:
    job = _failed(own[0], _job(own[0], tmp_path, "remote"))
    assert job["code"] == "ModelLoadError"
    assert f"`hf download {MISSING_REPO}`" in job["message"]
    assert "DASHTUNE_HF_OFFLINE" in job["message"] and "local directory" in job["message"]
    shown = own_cli.ok("jobs", "get", job["job_id"]).stdout
    assert f"hf download {MISSING_REPO}" in shown


def test_unmaskable_template_fails_in_validation_with_the_reason(
    own: tuple[Server, Path, dict[str, str]], tmp_path: Path
) -> None:
    srv = own[0]
    for model in ("my-chatml", "my-untemplated"):  # plain ChatML, and the default template
        wait_status(srv, _job(srv, tmp_path, model), "QUEUING")
    job = _failed(srv, _job(srv, tmp_path, "my-unmaskable", training_type="efficient_sft"))
    assert job["code"] == "InvalidChatTemplate"
    assert "my-unmaskable" in job["message"] and "prefix-consistently" in job["message"]
    assert "{% generation %}" in job["message"]
    # DPO and CPT mask no prompt: the template does not stop them.
    dpo = [{"messages": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}]
    with srv.http() as c:
        fid = upload(c, write_jsonl(tmp_path / "dpo.jsonl", dpo))
        r = c.post(
            "/fine-tunes",
            json={
                "model": "my-unmaskable",
                "training_file_ids": [fid],
                "training_type": "dpo_lora",
            },
        )
    wait_status(srv, r.json()["output"]["job_id"], "QUEUING")


def test_missing_local_directory_fails_in_validation(
    own: tuple[Server, Path, dict[str, str]], tmp_path: Path
) -> None:
    job = _failed(own[0], _job(own[0], tmp_path, "gone"))
    assert job["code"] == "ModelLoadError" and "no-such-dir" in job["message"]


def test_catalog_edits_apply_without_a_restart(
    own: tuple[Server, Path, dict[str, str]], tmp_path: Path, own_cli: Cli
) -> None:
    srv, catalog, models = own
    _catalog(catalog, {**models, "added-later": models["my-chatml"]})
    assert "added-later" in {m["model"] for m in own_cli.json("models", "list")}
    wait_status(srv, _job(srv, tmp_path, "added-later"), "QUEUING")

    catalog.write_text("models: [this is: not a mapping")  # a half-saved edit
    assert "added-later" in {m["model"] for m in own_cli.json("models", "list")}
    _catalog(catalog, models)
    assert "added-later" not in {m["model"] for m in own_cli.json("models", "list")}
