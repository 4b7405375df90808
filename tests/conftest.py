"""Fixtures that start real dashtune servers (the CLI, over HTTP) on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from dashtune.config import Settings
from dashtune.services.runtime import Runtime

# No network in tests: a catalog model that is not local fails with the command to fetch it.
os.environ["DASHTUNE_HF_OFFLINE"] = "true"

BIN = Path(sys.executable).parent
PG_ADMIN = os.environ.get("DASHTUNE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = [b for b in os.environ.get("DASHTUNE_TEST_BACKENDS", "sqlite,postgres").split(",") if b]


def _postgres_missing() -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    try:
        psycopg.connect(PG_ADMIN, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


# `make test` on a machine without PostgreSQL runs the SQLite half and says so; naming the
# backends (DASHTUNE_TEST_BACKENDS, as .ci/run does) makes a missing PostgreSQL an error.
PG_SKIPPED: str | None = None
if "DASHTUNE_TEST_BACKENDS" not in os.environ and "postgres" in BACKENDS:
    why = _postgres_missing()
    if why:
        BACKENDS.remove("postgres")
        PG_SKIPPED = (
            f"PostgreSQL at {PG_ADMIN} is not reachable ({why}): the PostgreSQL half of the "
            "tests is skipped, only SQLite runs. Start PostgreSQL (or set DASHTUNE_TEST_PG) "
            "to run both."
        )


def pytest_report_header(config: pytest.Config) -> str | None:
    return PG_SKIPPED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if PG_SKIPPED:
        terminalreporter.write_line(PG_SKIPPED, yellow=True, bold=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    base: str
    key: str
    data_dir: Path
    database_url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.base + "/api/v1"

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.database_url)

    def runtime(self) -> Runtime:
        return Runtime.open(self.settings(), run_migrations=False)

    def new_key(self, user: str, workspace: str | None = None) -> str:
        """A key made the way an operator makes one: `dashtune keys create`."""
        cmd = [
            str(BIN / "dashtune"),
            "keys",
            "create",
            "--user",
            user,
            "--data-dir",
            str(self.data_dir),
        ]
        if workspace:
            cmd += ["--workspace", workspace]
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def http(self, key: str | None = None, **headers: str) -> httpx.Client:
        h = {"Authorization": f"Bearer {key or self.key}", **headers}
        return httpx.Client(base_url=self.api, headers=h, timeout=60)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    data_dir: Path,
    database_url: str,
    *args: str,
    log_name: str = "server.log",
    **env_overrides: str,
) -> Server:
    """`dashtune serve` with extra CLI `args`; several may share a data dir (own log names)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DASHTUNE_DATABASE_URL": database_url,
            "DASHTUNE_DATA_DIR": str(data_dir),
            "HF_HUB_OFFLINE": "1",
            "DASHTUNE_HF_OFFLINE": "true",
            "OMP_NUM_THREADS": "1",
            # Webhook receivers of the tests listen on loopback; retries come quickly.
            "DASHTUNE_WEBHOOK_ALLOW_PRIVATE": "true",
            "DASHTUNE_WEBHOOK_BACKOFF": "0.3",
            "DASHTUNE_WEBHOOK_LEASE": "3",
            "DASHTUNE_WEBHOOK_INTERVAL": "0.2",
        }
    )
    env.update(env_overrides)
    log_path = data_dir / log_name
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "dashtune"), "serve", "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # a loaded CI machine starts slowly
    while True:
        if proc.poll() is not None:
            raise RuntimeError("server exited:\n" + log_path.read_text())
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start:\n" + log_path.read_text())
        time.sleep(0.2)
    # Printed on first start only: a restarted server has no new key to show.
    key = next(
        (
            line.split("=", 1)[1].strip()
            for line in log_path.read_text().splitlines()
            if "DASHSCOPE_API_KEY=" in line
        ),
        "",
    )
    return Server(base, key, data_dir, database_url, proc, log_path, env)


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="session")
def database_factory() -> Iterator[object]:
    """Creates a fresh PostgreSQL database per request; drops them all at the end."""
    created: list[str] = []

    def make(backend: str, data_dir: Path) -> str:
        if backend == "sqlite":
            return ""
        name = f"dashtune_t_{secrets.token_hex(4)}"
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
        except psycopg.OperationalError as exc:
            pytest.fail(f"PostgreSQL at {PG_ADMIN} is not reachable: {exc}")
        created.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    yield make
    for name in created:
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass


@pytest.fixture(scope="session", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_factory
) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """The control plane alone (no training engine): jobs stop at QUEUING."""
    data_dir = tmp_path_factory.mktemp(f"cp-{request.param}")
    url = database_factory(request.param, data_dir)
    srv = start_server(
        data_dir,
        url,
        DASHTUNE_EXECUTOR="none",
        DASHTUNE_HEARTBEAT_TIMEOUT="3600",
        DASHTUNE_MAX_UPLOAD_BYTES=str(1 << 20),
        DASHTUNE_SERVING="false",
    )
    yield srv
    stop_server(srv)


@pytest.fixture(autouse=True)
def _end_leftover_jobs(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests share one server per backend: cancel what a test left queued, so that the
    next test's engine steps claim its own jobs."""
    yield
    if "server" not in request.fixturenames:
        return
    srv: Server = request.getfixturevalue("server")
    from sqlalchemy import select

    from dashtune.domain.errors import UnsupportedOperation
    from dashtune.domain.states import TERMINAL
    from dashtune.services import jobs
    from dashtune.services.tenancy import Principal
    from dashtune.store.tables import Job

    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            live = s.scalars(select(Job).where(Job.status.not_in([str(x) for x in TERMINAL]))).all()
        for job in live:
            who = Principal(job.user_id, "test-cleanup", job.workspace_id)
            try:
                jobs.cancel(rt, who, job.id)
            except UnsupportedOperation:  # it ended meanwhile (e.g. its validation failed)
                continue
            if job.status in ("RUNNING", "CANCELING"):
                from dashtune.services import engine

                engine.finish(rt, job.id, engine.Outcome(canceled=True))
    finally:
        rt.close()
