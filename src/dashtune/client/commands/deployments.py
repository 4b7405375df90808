"""`dashtune deployments ...`: serve fine-tuned models (§5 of the contract)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from dashtune.client.errors import ApiError, ReportedGroup
from dashtune.client.http import connect
from dashtune.client.render import (
    JsonFlag,
    cell,
    done,
    err_console,
    fields,
    print_json,
    status_text,
    table,
)

app = typer.Typer(
    cls=ReportedGroup, no_args_is_help=True, help="Deploy models and manage deployments."
)

COLUMNS = [
    ("DEPLOYED MODEL", lambda d: cell(d.get("deployed_model"))),
    ("STATUS", lambda d: status_text(d.get("status"))),
    ("MODEL", lambda d: cell(d.get("model_name"))),
    ("BASE MODEL", lambda d: cell(d.get("base_model"))),
    ("CAPACITY", lambda d: f"{d.get('ready_capacity', 0)}/{d.get('capacity', '-')}"),
    ("CREATED", lambda d: cell(d.get("gmt_create"))),
]


@app.command()
def create(
    model_name: Annotated[str, typer.Argument(help="A fine-tuned (or exported) model name.")],
    capacity: Annotated[int, typer.Option(help="Instances to run.")] = 1,
    suffix: Annotated[str | None, typer.Option(help="Suffix of the deployed model name.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is RUNNING.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits.")] = 300.0,
    as_json: JsonFlag = False,
) -> None:
    """Deploy a model; call it afterwards with `dashtune chat DEPLOYED_MODEL`."""
    with connect() as c:
        dep = c.create_deployment(model_name, capacity, suffix)
        name = dep["deployed_model"]
        if wait:
            deadline = time.monotonic() + timeout
            with err_console.status(f"deploying {name}…"):
                while dep.get("status") not in ("RUNNING", "FAILED"):
                    if time.monotonic() > deadline:
                        raise ApiError(
                            "Timeout", f"{name} is still {dep.get('status')} after {timeout:.0f} s."
                        )
                    time.sleep(1.0)
                    dep = c.get_deployment(name)
            if dep["status"] == "FAILED":
                raise ApiError(
                    "DeploymentFailed", f"{name} FAILED: {dep.get('message') or 'no reason given'}"
                )
    done(f"deployed {name} ({dep.get('status')}); chat with it: dashtune chat {name}", dep, as_json)


@app.command("list")
def list_deployments(
    page: Annotated[int, typer.Option("--page", help="Page number.")] = 1,
    page_size: Annotated[int, typer.Option("--page-size", help="Deployments per page.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List deployments."""
    with connect() as c:
        data = c.list_deployments(page, page_size)
    if as_json:
        print_json(data)
        return
    table(data.get("deployments") or [], COLUMNS, title="Deployments")


@app.command()
def get(deployed_model: str, as_json: JsonFlag = False) -> None:
    """Show one deployment."""
    with connect() as c:
        dep: dict[str, Any] = c.get_deployment(deployed_model)
    if as_json:
        print_json(dep)
        return
    fields(
        dep,
        [
            ("deployed_model", dep.get("deployed_model")),
            ("status", status_text(dep.get("status"))),
            ("model_name", dep.get("model_name")),
            ("base_model", dep.get("base_model")),
            ("capacity", f"{dep.get('ready_capacity', 0)} ready of {dep.get('capacity')}"),
            ("created", dep.get("gmt_create")),
            ("modified", dep.get("gmt_modified")),
            ("message", dep.get("message")),
        ],
    )


@app.command()
def scale(
    deployed_model: str,
    capacity: Annotated[int, typer.Option(help="New number of instances.")],
    as_json: JsonFlag = False,
) -> None:
    """Change a deployment's capacity."""
    with connect() as c:
        dep = c.scale_deployment(deployed_model, capacity)
    done(f"{deployed_model}: capacity {capacity}", dep, as_json)


@app.command()
def delete(deployed_model: str, as_json: JsonFlag = False) -> None:
    """Remove a deployment."""
    with connect() as c:
        out = c.delete_deployment(deployed_model)
    done(f"deleted {deployed_model}", out, as_json)
