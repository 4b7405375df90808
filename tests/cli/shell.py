"""Running the real `dashtune` executable as a user's shell would, and checking its output."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import BIN

# Every variable that could point the CLI at another server or profile.
CLIENT_ENV = ("DASHTUNE_URL", "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_API_KEY", "DASHTUNE_PROFILE")


@dataclass
class Cli:
    """The `dashtune` command with a fixed environment; returns the finished process."""

    env: dict[str, str]

    def __call__(
        self, *args: str, input: str | None = None, timeout: float = 60, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "dashtune"), *args],
            env={**self.env, **env},
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run and require exit status 0."""
        out = self(*args, **kwargs)
        assert out.returncode == 0, f"dashtune {' '.join(args)}\n{out.stdout}\n{out.stderr}"
        return out

    def json(self, *args: str, **kwargs: Any) -> Any:
        """Run with --json; stdout must be one valid JSON document."""
        return json.loads(self.ok(*args, "--json", **kwargs).stdout)


def client_env(home: Path, url: str | None = None, key: str | None = None) -> dict[str, str]:
    """This process's environment without any client settings, with its own HOME."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV}
    env.update({"XDG_CONFIG_HOME": str(home / "config"), "HOME": str(home), "COLUMNS": "200"})
    if url:
        env["DASHTUNE_URL"] = url
    if key:
        env["DASHSCOPE_API_KEY"] = key
    return env


def assert_cli_error(out: subprocess.CompletedProcess[str], code: str, *words: str) -> None:
    """Non-zero exit, `Error: <code>: <message>` on stderr, nothing on stdout, no traceback."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == "", out.stdout
    assert f"Error: {code}: " in out.stderr, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    for word in words:
        assert word.lower() in out.stderr.lower(), (word, out.stderr)
