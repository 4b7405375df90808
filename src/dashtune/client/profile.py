"""Where the CLI finds its server and API key.

Environment first (`DASHTUNE_URL` or the SDK's `DASHSCOPE_HTTP_BASE_URL`, and
`DASHSCOPE_API_KEY`), then the profile file that `dashtune login` writes
(`$XDG_CONFIG_HOME/dashtune/profile.toml`, or the path in `DASHTUNE_PROFILE`), then
`http://127.0.0.1:8000`. The environment wins so that one shell can point elsewhere
without touching the saved profile, as with the SDKs.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dashtune.client.errors import ApiError

DEFAULT_URL = "http://127.0.0.1:8000"
# The SDKs' base URLs end in one of these; the CLI wants the server root.
API_SUFFIXES = ("/api/v1", "/compatible-mode/v1")


@dataclass(frozen=True)
class Profile:
    url: str
    key: str | None

    def require_key(self) -> str:
        """The API key, or an error that says how to provide one."""
        if not self.key:
            raise ApiError(
                "InvalidApiKey",
                "No API key: set DASHSCOPE_API_KEY or run `dashtune login --url URL --key KEY`.",
            )
        return self.key


def profile_path() -> Path:
    override = os.environ.get("DASHTUNE_PROFILE")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dashtune" / "profile.toml"


def server_root(url: str) -> str:
    """The server root for any URL a user may hold: the root or an SDK base URL."""
    url = url.strip().rstrip("/")
    for suffix in API_SUFFIXES:
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


def read_saved() -> dict[str, str]:
    """The saved profile's values; empty when there is no profile file."""
    path = profile_path()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ApiError("InvalidProfile", f"Cannot read {path}: {exc}.") from None
    return {k: str(v) for k, v in data.items() if k in ("url", "api_key")}


def load() -> Profile:
    """The profile in effect for this process."""
    saved = read_saved()
    url = (
        os.environ.get("DASHTUNE_URL")
        or os.environ.get("DASHSCOPE_HTTP_BASE_URL")
        or saved.get("url")
        or DEFAULT_URL
    )
    key = os.environ.get("DASHSCOPE_API_KEY") or saved.get("api_key")
    return Profile(url=server_root(url), key=key or None)


def save(url: str, key: str) -> Path:
    """Write the profile file, readable by its owner only (it holds a secret)."""
    import tomli_w

    path = profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(tomli_w.dumps({"url": server_root(url), "api_key": key}))
    os.chmod(path, 0o600)
    return path


def overridden_by_env() -> list[str]:
    """Environment variables that take precedence over the saved profile right now."""
    names = ("DASHTUNE_URL", "DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_API_KEY")
    return [n for n in names if os.environ.get(n)]
