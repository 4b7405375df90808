"""The `dashtune` command: serve and keys (server side), and the user commands of
`dashtune.client.commands` (files, jobs, deployments, chat, login) that call a server over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dashtune.client.commands import chat, deployments, files, jobs, login
from dashtune.client.errors import ReportedCommand

if TYPE_CHECKING:
    from dashtune.config import Settings

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Self-hosted DashScope fine-tuning."
)
keys_app = typer.Typer(no_args_is_help=True, help="Manage API keys (run on the server machine).")
app.add_typer(keys_app, name="keys")
# User commands: HTTP clients of a running server (kept light: no server imports).
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
app.add_typer(deployments.app, name="deployments")

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory [env DASHTUNE_DATA_DIR].")
]


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
) -> None:
    """Start the API server (and its scheduler) on the embedded default or the configured DB."""
    import uvicorn

    from dashtune.api.app import create_app
    from dashtune.logging_setup import configure_logging
    from dashtune.services.runtime import Runtime
    from dashtune.services.tenancy import create_key, has_users

    settings = _settings(data_dir, host=host, port=port)
    configure_logging(settings)
    rt = Runtime.open(settings)
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
    )


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="User name (created if missing).")],
    workspace: Annotated[
        str | None, typer.Option("--workspace", help="Workspace to join (created if missing).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create an API key; prints the key alone on stdout."""
    from dashtune.services.runtime import Runtime
    from dashtune.services.tenancy import create_key

    rt = Runtime.open(_settings(data_dir))
    typer.echo(create_key(rt, user, workspace))


@keys_app.command("revoke")
def keys_revoke(key: str, data_dir: DataDir = None) -> None:
    """Revoke an API key."""
    from dashtune.services.runtime import Runtime
    from dashtune.services.tenancy import revoke_key

    rt = Runtime.open(_settings(data_dir))
    if not revoke_key(rt, key):
        typer.echo("No such key.", err=True)
        raise typer.Exit(1)
    typer.echo("revoked")


app.command("login", cls=ReportedCommand)(login.login)
app.command("chat", cls=ReportedCommand)(chat.chat)

if __name__ == "__main__":
    app()
