"""`dashtune login`: check a server URL and key, then save them as the profile."""

from __future__ import annotations

from typing import Annotated

import typer

from dashtune.client.http import Client
from dashtune.client.profile import overridden_by_env, save, server_root
from dashtune.client.render import console, err_console


def login(
    url: Annotated[str, typer.Option(help="Server URL, e.g. http://127.0.0.1:8000.")],
    key: Annotated[str, typer.Option(help="API key (from `dashtune keys create`).")],
) -> None:
    """Save the server URL and API key for later commands, after checking that they work."""
    root = server_root(url)
    with Client(root, key) as c:
        c.list_jobs(page_size=1)  # proves both the URL and the key
    path = save(root, key)
    console.print(f"Logged in to {root}; profile saved to {path}")
    for name in overridden_by_env():
        err_console.print(
            f"[yellow]Note:[/yellow] ${name} is set and takes precedence over the profile."
        )
