"""`dashtune webhooks ...`: signed notifications of job and deployment events."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dashtune.client.errors import ReportedGroup
from dashtune.client.http import connect
from dashtune.client.render import JsonFlag, cell, done, print_json, table

app = typer.Typer(cls=ReportedGroup, no_args_is_help=True, help="Manage webhooks.")

COLUMNS = [
    ("WEBHOOK ID", lambda w: cell(w.get("webhook_id"))),
    ("URL", lambda w: cell(w.get("url"))),
    ("EVENTS", lambda w: ", ".join(w.get("event_types") or [])),
    ("CREATED", lambda w: cell(w.get("create_time"))),
]
DELIVERY_COLUMNS = [
    ("WEBHOOK-ID", lambda d: cell(d.get("webhook_message_id"))),
    ("EVENT", lambda d: cell(d.get("event_type"))),
    ("STATUS", lambda d: cell(d.get("status"))),
    (
        "ATTEMPTS",
        lambda d: ", ".join(
            str(a.get("status_code") or a.get("error")) for a in d.get("attempts") or []
        ),
    ),
    ("CREATED", lambda d: cell(d.get("create_time"))),
]


@app.command()
def create(
    url: Annotated[str, typer.Argument(help="http(s) URL that receives the events.")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="Event type (repeatable); all when omitted."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Register a webhook; prints its signing secret, shown only once."""
    with connect() as c:
        hook: dict[str, Any] = c.create_webhook(url, event)
    done(
        f"created {hook['webhook_id']}; signing secret (shown once): {hook['secret']}",
        hook,
        as_json,
    )


@app.command("list")
def list_webhooks(as_json: JsonFlag = False) -> None:
    """List the workspace's webhooks."""
    with connect() as c:
        hooks = c.list_webhooks()
    if as_json:
        print_json(hooks)
        return
    table(hooks, COLUMNS, title="Webhooks")


@app.command()
def delete(webhook_id: str, as_json: JsonFlag = False) -> None:
    """Delete a webhook (its pending deliveries too)."""
    with connect() as c:
        out = c.delete_webhook(webhook_id)
    done(f"deleted {webhook_id}", out, as_json)


@app.command()
def deliveries(webhook_id: str, as_json: JsonFlag = False) -> None:
    """Deliveries of a webhook, newest first, with each attempt's status code or error."""
    with connect() as c:
        rows = c.webhook_deliveries(webhook_id)
    if as_json:
        print_json(rows)
        return
    table(rows, DELIVERY_COLUMNS, title="Deliveries")
