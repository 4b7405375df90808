"""`dashtune models list`: the catalog's base models (and whether their weights are here)
and the workspace's own fine-tuned models."""

from __future__ import annotations

from typing import Any

import typer

from dashtune.client.errors import ReportedGroup
from dashtune.client.http import API, connect
from dashtune.client.render import JsonFlag, cell, print_json, table

app = typer.Typer(cls=ReportedGroup, no_args_is_help=True, help="Models to train or call.")

COLUMNS = [
    ("MODEL", lambda m: cell(m.get("model"))),
    ("SOURCE", lambda m: cell(m.get("source"))),
    ("BASE MODEL", lambda m: cell(m.get("base_model"))),
    ("LOCAL", lambda m: _local(m)),
    ("WEIGHTS", lambda m: cell(m.get("weights") or m.get("kind"))),
]


def _local(m: dict[str, Any]) -> str:
    if "available" not in m:
        return "yes"  # a fine-tuned model lives in the server's data dir
    return "yes" if m["available"] else "[yellow]no[/yellow]"


@app.command("list")
def list_models(as_json: JsonFlag = False) -> None:
    """List catalog base models (LOCAL: weights on the server) and your fine-tuned models."""
    with connect() as c:
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            out = c.request("GET", f"{API}/models", params={"page_no": page, "page_size": 100})
            items += out["output"]["models"]
            if len(items) >= out["output"]["total"] or not out["output"]["models"]:
                break
            page += 1
    if as_json:
        print_json(items)
        return
    table(items, COLUMNS, title="Models")
