"""Every failure reads `Error: <Code>: <message>` on stderr with exit 1, never a traceback."""

from __future__ import annotations

from pathlib import Path

from tests.cli.shell import Cli, assert_cli_error, client_env
from tests.conftest import Server, free_port
from tests.integration.helpers import sft_rows, write_jsonl


def test_api_errors_show_code_and_message(cli: Cli, tmp_path: Path) -> None:
    assert_cli_error(cli("jobs", "get", "ft-nope"), "NotFound", "ft-nope")
    assert_cli_error(cli("jobs", "get", "ft-nope", "--json"), "NotFound")
    assert_cli_error(cli("files", "delete", "nope"), "NotFound")
    assert_cli_error(cli("jobs", "create", "-m", "no-such-model", "-t", "0000"), "InvalidParameter")
    data = write_jsonl(tmp_path / "t.jsonl", sft_rows(2))
    assert_cli_error(
        cli("jobs", "create", "-m", "dashtune-tiny", "-t", str(data), "--hp", "n_epoch=3"),
        "InvalidParameter",
        "n_epoch",
    )
    assert_cli_error(
        cli("jobs", "create", "-m", "dashtune-tiny", "-t", str(data), "--hp", "n_epochs"),
        "InvalidParameter",
        "KEY=VALUE",
    )
    assert_cli_error(cli("jobs", "list", DASHSCOPE_API_KEY="sk-wrong"), "InvalidApiKey")


def test_connection_refused_is_a_clear_error(tmp_path: Path) -> None:
    cli = Cli(client_env(tmp_path, f"http://127.0.0.1:{free_port()}", "sk-any"))
    for args in (
        ("jobs", "list"),
        ("jobs", "watch", "ft-x"),
        ("files", "upload", __file__),
        ("chat", "m", "-m", "hi"),
    ):
        out = cli(*args)
        assert_cli_error(out, "ConnectionError", "cannot reach dashtune")


def test_missing_key_says_how_to_provide_one(bare_cli: Cli, server: Server) -> None:
    out = bare_cli("jobs", "list", DASHTUNE_URL=server.base)
    assert_cli_error(out, "InvalidApiKey", "DASHSCOPE_API_KEY", "dashtune login")


def test_usage_errors_are_not_tracebacks(cli: Cli) -> None:
    out = cli("jobs", "get")
    assert out.returncode == 2 and "Missing argument" in out.stderr
    assert "Traceback" not in out.stderr
