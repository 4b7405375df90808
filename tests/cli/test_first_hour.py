"""What tripped a new user in the first hour, through the `dashtune` command as they met it:
log tails, `--json` placement, help noise, chat commands, the quota, a cut-off upload."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashtune.services import engine
from tests.cli.control_plane import start_control_plane, wait_status
from tests.cli.shell import Cli, assert_cli_error, client_env
from tests.conftest import Server, stop_server
from tests.integration.helpers import sft_rows, write_jsonl


def _job(cli: Cli, tmp_path: Path) -> str:
    path = write_jsonl(tmp_path / "t.jsonl", sft_rows(2))
    return str(cli.json("jobs", "create", "-m", "dashtune-tiny", "-t", str(path))["job_id"])


def test_logs_show_the_tail_and_say_what_is_left_out(
    cli: Cli, server: Server, runtime: Any, tmp_path: Path
) -> None:
    job_id = _job(cli, tmp_path)
    wait_status(server, job_id, "QUEUING")
    engine.log(runtime, job_id, [f"training line {i}" for i in range(150)])
    total = int(cli.json("jobs", "logs", job_id, "--all")["total"])
    assert total >= 152  # created, queued, and the 150

    tail = cli.ok("jobs", "logs", job_id)
    shown = tail.stdout.splitlines()
    assert len(shown) == 100 and shown[-1] == "training line 149"
    assert f"{total - 100} earlier line(s) not shown; --all prints every line" in tail.stderr

    every = cli.ok("jobs", "logs", job_id, "--all")
    assert len(every.stdout.splitlines()) == total and "earlier" not in every.stderr
    head = cli.ok("jobs", "logs", job_id, "--offset", "0", "-n", "5")
    assert len(head.stdout.splitlines()) == 5
    assert f"{total - 5} more line(s); next: --offset 5" in head.stderr
    assert cli.json("jobs", "logs", job_id, "-n", "3")["logs"] == [
        "training line 147",
        "training line 148",
        "training line 149",
    ]


def test_json_goes_before_or_after_the_subcommand(cli: Cli) -> None:
    for args in (
        ("--json", "jobs", "list"),
        ("jobs", "--json", "list"),
        ("jobs", "list", "--json"),
    ):
        assert "jobs" in json.loads(cli.ok(*args).stdout), args


def test_help_shows_no_type_beside_flags(cli: Cli) -> None:
    text = cli.ok("jobs", "logs", "--help").stdout
    assert "<bool>" not in text and "--all" in text and "<int>" in text


def test_chat_commands_are_answered_locally(cli: Cli) -> None:
    # Serving is off on this server: a line sent to the model would fail the command.
    out = cli.ok("chat", "dashtune-tiny", input="/help\n/reset\n/bogus\n/exit\n")
    assert "/reset" in out.stderr and "never sent to the model" in out.stderr
    assert "history cleared (0 turn(s) forgotten)" in out.stderr
    assert "unknown command /bogus" in out.stderr
    assert out.stdout == ""


def test_cut_off_upload_line_says_what_is_wrong_and_where(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    good = (
        '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    )
    start = good.index('"assistant"')  # the line ends inside this string
    path.write_text(good + "\n" + good[: start + 5] + "\n")
    out = cli("files", "upload", str(path))
    column = f"column {start + 1}"  # where the open string starts
    assert_cli_error(out, "InvalidParameter", "line 2", "string is not closed", column, "cut off")
    assert "Invalid control character" not in out.stderr


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_control_plane(tmp_path_factory.mktemp("quota"), DASHTUNE_JOB_QUOTA="1")
    yield srv
    stop_server(srv)


def test_quota_message_and_invalid_requests_at_the_quota(
    quota_server: Server, tmp_path: Path
) -> None:
    cli = Cli(client_env(tmp_path, quota_server.base, quota_server.key))
    path = write_jsonl(tmp_path / "q.jsonl", sft_rows(2))
    first = cli.json("jobs", "create", "-m", "dashtune-tiny", "-t", str(path), "--model-name", "m1")
    # At the quota, an invalid request is told what is invalid, not to wait.
    taken = cli("jobs", "create", "-m", "dashtune-tiny", "-t", str(path), "--model-name", "m1")
    assert_cli_error(taken, "Conflict", "m1")
    bad = cli("jobs", "create", "-m", "no-such-model", "-t", str(path))
    assert_cli_error(bad, "InvalidParameter", "no-such-model")
    full = cli("jobs", "create", "-m", "dashtune-tiny", "-t", str(path))
    assert_cli_error(
        full,
        "Throttling",
        "1 of your fine-tune jobs counts against the limit of 1 per user",
        "PENDING, QUEUING, RUNNING, CANCELING, PAUSING, PAUSED or SUCCEEDED",
        "dashtune jobs delete",
    )
    assert "models" not in full.stderr
    cli.ok("jobs", "cancel", first["job_id"])
    cli.json("jobs", "create", "-m", "dashtune-tiny", "-t", str(path))


def test_a_key_the_training_type_does_not_use_is_reported(
    cli: Cli, server: Server, tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", sft_rows(2))
    job = cli.json("jobs", "create", "-m", "dashtune-tiny", "-t", str(path), "--hp", "lora_rank=4")
    text = cli.ok("jobs", "logs", job["job_id"]).stdout
    assert (
        "hyper_parameters.lora_rank (applies to efficient_sft, dpo_lora only) is not used by "
        "sft; it has no effect." in text
    )
