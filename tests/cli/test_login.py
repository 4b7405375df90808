"""`dashtune login` and where the CLI finds its server: environment, then profile file."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from tests.cli.shell import Cli, assert_cli_error
from tests.conftest import Server


def test_login_saves_a_private_profile_that_later_commands_use(
    bare_cli: Cli, server: Server, tmp_path: Path
) -> None:
    # The SDK's base URL is accepted as well as the server root.
    out = bare_cli.ok("login", "--url", server.api, "--key", server.key)
    path = tmp_path / "config" / "dashtune" / "profile.toml"
    assert str(path) in out.stdout
    assert tomllib.loads(path.read_text()) == {"url": server.base, "api_key": server.key}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert "jobs" in bare_cli.json("jobs", "list")

    # The environment wins over the profile, as with the SDKs.
    assert_cli_error(bare_cli("jobs", "list", DASHSCOPE_API_KEY="sk-other"), "InvalidApiKey")
    assert_cli_error(
        bare_cli("jobs", "list", DASHSCOPE_HTTP_BASE_URL="http://127.0.0.1:9/api/v1"),
        "ConnectionError",
        "127.0.0.1:9",
    )


def test_login_with_a_bad_key_saves_nothing(bare_cli: Cli, server: Server, tmp_path: Path) -> None:
    assert_cli_error(bare_cli("login", "--url", server.base, "--key", "sk-bad"), "InvalidApiKey")
    assert not (tmp_path / "config" / "dashtune" / "profile.toml").exists()


def test_profile_path_override(bare_cli: Cli, server: Server, tmp_path: Path) -> None:
    custom = tmp_path / "elsewhere.toml"
    bare_cli.ok("login", "--url", server.base, "--key", server.key, DASHTUNE_PROFILE=str(custom))
    assert custom.exists()
    assert "jobs" in bare_cli.json("jobs", "list", DASHTUNE_PROFILE=str(custom))
