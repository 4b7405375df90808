"""`dashtune jobs ...` on the control plane (executor none: jobs stop at QUEUING, and the
test moves them on through the engine, as a worker would)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from dashtune.services import engine
from tests.cli.control_plane import wait_status
from tests.cli.shell import Cli, assert_cli_error
from tests.conftest import BIN, Server
from tests.integration.helpers import sft_rows, write_jsonl


def create(cli: Cli, path: Path, *extra: str) -> dict[str, Any]:
    job: dict[str, Any] = cli.json("jobs", "create", "-m", "dashtune-tiny", "-t", str(path), *extra)
    return job


def test_create_list_get_cancel_delete(cli: Cli, server: Server, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", sft_rows(4))
    job = create(
        cli,
        data,
        "--type",
        "efficient_sft",
        "--hp",
        "n_epochs=2",
        "--hp",
        "learning_rate=3e-3",
        "--hp",
        "lr_scheduler_type=constant",
        "--name",
        "cli job",
    )
    job_id = job["job_id"]
    assert job["status"] == "PENDING" and job["job_name"] == "cli job"
    # Values are typed from the command line: numbers stay numbers.
    assert job["hyper_parameters"] == {
        "n_epochs": 2,
        "learning_rate": 0.003,
        "lr_scheduler_type": "constant",
    }
    assert job["training_type"] == "efficient_sft"
    wait_status(server, job_id, "QUEUING")

    listed = cli.json("jobs", "list", "--model", "dashtune-tiny", "--page-size", "100")
    assert job_id in [j["job_id"] for j in listed["jobs"]]
    table = cli.ok("jobs", "list").stdout
    assert job_id in table and "QUEUING" in table

    shown = cli.ok("jobs", "get", job_id).stdout
    for text in (job_id, "efficient_sft", "n_epochs", "lora_rank", "allowed_actions", "cancel"):
        assert text in shown, text
    assert cli.json("jobs", "get", job_id)["allowed_actions"] == ["cancel", "pause"]

    logs = cli.json("jobs", "logs", job_id)
    assert logs["total"] >= 2 and any("queued" in line for line in logs["logs"])
    assert "queued" in cli.ok("jobs", "logs", job_id).stdout

    assert_cli_error(cli("jobs", "delete", job_id), "UnsupportedOperation", "cancel it first")
    assert cli.json("jobs", "cancel", job_id) == {"status": "success"}
    assert cli.json("jobs", "get", job_id)["status"] == "CANCELED"
    # The stream of an ended job replays its log and ends.
    followed = cli.ok("jobs", "logs", job_id, "-f").stdout
    assert "queued" in followed and "canceled" in followed.lower()
    events = [
        json.loads(line)
        for line in cli.ok("jobs", "logs", job_id, "-f", "--json").stdout.splitlines()
    ]
    assert {"log", "status"} <= {e["type"] for e in events}

    cli.ok("jobs", "delete", job_id)
    assert_cli_error(cli("jobs", "get", job_id), "NotFound", job_id)


def test_watch_exits_non_zero_on_a_failed_job(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    good = sft_rows(1)[0]
    bad.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "hi"}]})
        + "\n"
    )
    job = create(cli, bad)

    out = cli("jobs", "watch", job["job_id"], "--interval", "0.2")
    assert out.returncode == 1, out
    assert "Error: InvalidDataset: " in out.stderr and "line 2" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr

    # --json: the final job object alone on stdout, the reason still on stderr.
    out = cli("jobs", "watch", job["job_id"], "--json")
    assert out.returncode == 1
    final = json.loads(out.stdout)
    assert final["status"] == "FAILED" and final["code"] == "InvalidDataset"
    assert "InvalidDataset" in out.stderr


def test_create_with_watch_follows_the_job(cli: Cli, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "cpt.jsonl", [{"text": "no messages here"}])
    out = cli("jobs", "create", "-m", "dashtune-tiny", "-t", str(bad), "--watch")
    assert out.returncode == 1 and "InvalidDataset" in out.stderr, out


def test_watch_shows_live_progress_until_the_job_ends(
    cli: Cli, server: Server, runtime: Any, tmp_path: Path
) -> None:
    job_id = create(cli, write_jsonl(tmp_path / "t.jsonl", sft_rows(4)))["job_id"]
    wait_status(server, job_id, "QUEUING")
    claimed = engine.claim_next(runtime, "cli-test")
    assert claimed is not None and claimed.id == job_id

    watcher = subprocess.Popen(
        [str(BIN / "dashtune"), "jobs", "watch", job_id, "--interval", "0.2"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for step in (5, 10, 15):
        engine.record_metrics(
            runtime, job_id, step, {"loss": 2.0 / step, "tokens_per_second": 4321.0}
        )
        engine.record_progress(runtime, job_id, step, 20, 12.0)
        time.sleep(0.3)
    engine.record_metrics(runtime, job_id, 15, {"eval_loss": 0.25})
    time.sleep(0.3)
    assert watcher.poll() is None, "watch must run until the job ends"
    cli.ok("jobs", "cancel", job_id)
    engine.finish(runtime, job_id, engine.Outcome(canceled=True, usage=99))
    stdout, stderr = watcher.communicate(timeout=30)

    assert watcher.returncode == 1, (stdout, stderr)
    for text in (
        job_id,
        "CANCELED",
        "75%",
        "step 15/20",
        "loss 0.1333",
        "eval 0.2500",
        "4,321 tok/s",
    ):
        assert text in stderr, (text, stderr)
    assert "Error: Canceled: " in stderr


def test_checkpoints_metrics_and_export(
    cli: Cli, server: Server, runtime: Any, tmp_path: Path
) -> None:
    job_id = create(cli, write_jsonl(tmp_path / "t.jsonl", sft_rows(4)))["job_id"]
    wait_status(server, job_id, "QUEUING")
    assert engine.claim_next(runtime, "cli-test") is not None
    engine.record_metrics(runtime, job_id, 4, {"loss": 1.5, "learning_rate": 1e-3})
    engine.record_metrics(runtime, job_id, 4, {"eval_loss": 1.7})
    engine.add_checkpoint(runtime, job_id, "checkpoint-4", 4, str(tmp_path / "ckpt"), {"loss": 1.5})

    points = cli.json("jobs", "metrics", job_id)
    assert points == [
        {"step": 4, "loss": 1.5, "learning_rate": 1e-3},
        {"step": 4, "eval_loss": 1.7},
    ]
    assert "EVAL_LOSS" in cli.ok("jobs", "metrics", job_id).stdout

    cps = cli.json("jobs", "checkpoints", job_id)
    assert [(c["checkpoint"], c["step"], c["status"]) for c in cps] == [
        ("checkpoint-4", 4, "PENDING")
    ]
    assert "checkpoint-4" in cli.ok("jobs", "checkpoints", job_id).stdout

    assert_cli_error(
        cli("jobs", "export", job_id, "checkpoint-4", "--model-name", "early"),
        "UnsupportedOperation",
        "RUNNING",
    )
    cli.ok("jobs", "cancel", job_id)
    engine.finish(runtime, job_id, engine.Outcome(canceled=True))
    assert cli.json("jobs", "export", job_id, "checkpoint-4", "--model-name", "early") is True


def test_pause_and_resume(cli: Cli, server: Server, runtime: Any, tmp_path: Path) -> None:
    job_id = create(cli, write_jsonl(tmp_path / "t.jsonl", sft_rows(4)))["job_id"]
    wait_status(server, job_id, "QUEUING")
    assert_cli_error(
        cli("jobs", "resume", job_id), "UnsupportedOperation", "QUEUING", "only PAUSED jobs"
    )

    # QUEUING pauses at once: no worker has anything to save.
    assert cli.ok("jobs", "pause", job_id).stdout == f"pause requested for {job_id}: PAUSED\n"
    paused = cli.json("jobs", "get", job_id)
    assert paused["status"] == "PAUSED" and paused["allowed_actions"] == ["cancel", "resume"]
    assert "PAUSED" in cli.ok("jobs", "get", job_id).stdout
    assert_cli_error(cli("jobs", "pause", job_id), "UnsupportedOperation", "cannot be paused")
    assert_cli_error(
        cli("jobs", "delete", job_id), "UnsupportedOperation", "PAUSED", "cancel it first"
    )
    assert cli.json("jobs", "get", job_id)["status"] == "PAUSED"  # the refusals changed nothing

    assert cli.ok("jobs", "resume", job_id).stdout == f"resumed {job_id}: QUEUING\n"
    assert cli.json("jobs", "get", job_id)["status"] == "QUEUING"
    logs = "\n".join(cli.json("jobs", "logs", job_id)["logs"])
    assert "Pause requested by" in logs and "Resume requested by" in logs

    # RUNNING pauses through PAUSING, until its worker (played here by the engine) stops.
    claimed = engine.claim_next(runtime, "cli-test")
    assert claimed is not None and claimed.id == job_id
    pausing = cli.json("jobs", "pause", job_id)
    assert pausing["job_id"] == job_id and pausing["status"] == "PAUSING"
    assert_cli_error(cli("jobs", "resume", job_id), "UnsupportedOperation", "PAUSING")
    engine.finish(runtime, job_id, engine.Outcome(usage=7, paused=True))
    assert cli.json("jobs", "get", job_id)["status"] == "PAUSED"
    resumed = cli.json("jobs", "resume", job_id)
    assert resumed["job_id"] == job_id and resumed["status"] == "QUEUING"

    # Delete once canceled.
    cli.ok("jobs", "pause", job_id)
    assert cli.json("jobs", "cancel", job_id) == {"status": "success"}
    assert cli.json("jobs", "get", job_id)["status"] == "CANCELED"
    assert_cli_error(cli("jobs", "resume", job_id), "UnsupportedOperation", "CANCELED")
    cli.ok("jobs", "delete", job_id)
    assert_cli_error(cli("jobs", "get", job_id), "NotFound", job_id)
