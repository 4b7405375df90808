"""Fixtures for the CLI tests: a control-plane server and the CLI pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.control_plane import start_control_plane
from tests.cli.shell import Cli, client_env
from tests.conftest import Server, stop_server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Overrides the root `server` (one per backend) with one SQLite control plane."""
    srv = start_control_plane(tmp_path_factory.mktemp("cli-server"))
    yield srv
    stop_server(srv)


@pytest.fixture
def cli(server: Server, tmp_path: Path) -> Cli:
    """The CLI pointed at the control-plane server through the environment."""
    return Cli(client_env(tmp_path, server.base, server.key))


@pytest.fixture
def bare_cli(tmp_path: Path) -> Cli:
    """The CLI with no server or key in the environment (profile tests)."""
    return Cli(client_env(tmp_path))


@pytest.fixture
def runtime(server: Server) -> Iterator[Any]:
    """The server's database, for moving jobs on as a worker would (executor none)."""
    rt = server.runtime()
    yield rt
    rt.close()
