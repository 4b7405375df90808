"""The `dashtune` command: serve and keys (server side), and the user commands of
`dashtune.client.commands` (files, jobs, deployments, chat, login) that call a server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperOption

from dashtune.client.commands import chat, deployments, files, jobs, login, models, webhooks
from dashtune.client.errors import ReportedCommand, ReportedGroup

if TYPE_CHECKING:
    from dashtune.config import Settings
    from dashtune.services.runtime import Runtime

_option_type = TyperOption.display_type_rich


def _flag_without_type(self: TyperOption, ctx: Any) -> str | None:
    """typer's help prints `<bool>` beside every flag (typer 0.29); a flag takes no value."""
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_without_type  # type: ignore[method-assign]

app = typer.Typer(
    cls=ReportedGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Self-hosted DashScope fine-tuning.",
)
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (run on the server machine).")
app.add_typer(keys_app, name="keys")
# User commands: HTTP clients of a running server (kept light: no server imports).
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
app.add_typer(deployments.app, name="deployments")
app.add_typer(models.app, name="models")
app.add_typer(webhooks.app, name="webhooks")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory [env DASHTUNE_DATA_DIR].")
]


def _open(settings: Settings) -> Runtime:
    """The runtime, or one line on stderr saying what to fix and exit status 2 when the
    database cannot be reached (no traceback for an operator's configuration problem)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    from dashtune.services.runtime import Runtime

    try:
        return Runtime.open(settings)
    except OperationalError as exc:
        where = make_url(settings.database).render_as_string(hide_password=True)
        cause = str(exc.orig or exc).strip().splitlines()[0] if str(exc.orig or exc) else ""
        typer.echo(
            f"dashtune: cannot open the database {where} ({cause}); start it, or point "
            "DASHTUNE_DATABASE_URL at a reachable one.",
            err=True,
        )
        raise typer.Exit(2) from None


def _settings(data_dir: Path | None, **overrides: object) -> Settings:
    from dashtune.config import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)  # type: ignore[arg-type]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env DASHTUNE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env DASHTUNE_PORT].")] = None,
    data_dir: DataDir = None,
    scheduler: Annotated[
        bool | None,
        typer.Option(
            "--scheduler/--no-scheduler",
            help="Run a scheduler in this process [env DASHTUNE_SCHEDULER, default on].",
        ),
    ] = None,
) -> None:
    """Start the API server (and its scheduler) on the embedded default or the configured DB."""
    import uvicorn

    from dashtune.api.app import create_app
    from dashtune.api.http_protocol import MAX_HEADER_BYTES, JsonErrorH11Protocol
    from dashtune.logging_setup import configure_logging
    from dashtune.services.tenancy import create_key, has_users

    settings = _settings(data_dir, host=host, port=port, scheduler=scheduler)
    configure_logging(settings)
    rt = _open(settings)
    if settings.scheduler:
        _preflight(rt)
    base = f"http://{settings.host}:{settings.port}"
    if not has_users(rt):
        key = create_key(rt, "default")
        typer.echo("Created user 'default' with this API key (shown once, stored hashed):")
        typer.echo(f"  DASHSCOPE_API_KEY={key}")
    typer.echo(f"DashScope SDK:  DASHSCOPE_HTTP_BASE_URL={base}/api/v1")
    typer.echo(f"OpenAI SDK:     base_url={base}/compatible-mode/v1")
    typer.echo(f"Web console:    {base}/console")
    # log_config=None: uvicorn's loggers go through configure_logging's handler too.
    uvicorn.run(
        create_app(rt),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        log_config=None,
        http=JsonErrorH11Protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )


def _preflight(rt: Runtime) -> None:
    from dashtune.scheduler.loop import ConfigError, preflight

    try:
        preflight(rt)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("scheduler")
def scheduler_cmd(data_dir: DataDir = None) -> None:
    """Run a scheduler alone (no API): claims jobs and runs them on the configured executor.
    Any number may run against one PostgreSQL database; each job is claimed once."""
    import signal

    from dashtune.logging_setup import configure_logging
    from dashtune.scheduler.loop import Scheduler

    settings = _settings(data_dir)
    configure_logging(settings)
    rt = _open(settings)
    _preflight(rt)
    sched = Scheduler(rt)
    signal.signal(signal.SIGTERM, lambda *_: sched.request_stop())
    typer.echo(f"Scheduler {sched.id}: executor {settings.executor}")
    try:
        sched.run_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sched.stop()


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="User name (created if missing).")],
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            help="Workspace to join, by name or id (created if missing). Default: the "
            "user's own (a new user gets a new one).",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; prints the key alone on stdout, and its id and workspace on stderr."""
    from dashtune.services.tenancy import issue_key

    issued = issue_key(_open(_settings(data_dir)), user, workspace)
    typer.echo(
        f"key id {issued.key_id} for user '{user}' in workspace '{issued.workspace_name}' "
        f"({issued.workspace_id})",
        err=True,
    )
    typer.echo(issued.key)


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[
        str | None,
        typer.Argument(help="The key; omit it (or '-') to read it from stdin, out of `ps`."),
    ] = None,
    key_id: Annotated[
        str | None, typer.Option("--id", help="The key id that `keys create` printed.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke an API key, given on stdin (or as an argument), or by its id."""
    import sys

    from dashtune.services.tenancy import revoke_key, revoke_key_id

    rt = _open(_settings(data_dir))
    if key_id is not None:
        matched = revoke_key_id(rt, key_id.strip())
        if matched != 1:
            why = "No live key has" if matched == 0 else f"{matched} live keys have"
            typer.echo(f"{why} an id starting with '{key_id}'; nothing revoked.", err=True)
            raise typer.Exit(1)
        typer.echo("revoked")
        return
    if key is None or key == "-":
        key = sys.stdin.readline()
    if not key.strip() or not revoke_key(rt, key.strip()):
        typer.echo("No such key.", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


app.command("login", cls=ReportedCommand)(login.login)
app.command("chat", cls=ReportedCommand)(chat.chat)

if __name__ == "__main__":
    app()
