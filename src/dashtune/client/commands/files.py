"""`dashtune files upload|list|get|delete`: training data on the server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dashtune.client.errors import ReportedGroup
from dashtune.client.http import connect
from dashtune.client.render import JsonFlag, cell, done, fields, print_json, size, table

app = typer.Typer(cls=ReportedGroup, no_args_is_help=True, help="Upload and manage JSONL files.")

FILE_COLUMNS = [
    ("FILE ID", lambda f: cell(f.get("file_id"))),
    ("NAME", lambda f: cell(f.get("name"))),
    ("SIZE", lambda f: size(f.get("size"))),
    ("LINES", lambda f: cell(f.get("lines"))),
    ("UPLOADED", lambda f: cell(f.get("gmt_create"))),
    ("DESCRIPTION", lambda f: cell(f.get("description"))),
]


@app.command()
def upload(
    paths: Annotated[list[Path], typer.Argument(help="JSONL files to upload.")],
    description: Annotated[str, typer.Option("--description", "-d", help="Description.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Upload JSONL files (each line one training sample); prints their file ids."""
    with connect() as c:
        uploaded = [c.upload_file(p, description) for p in paths]
    if as_json:
        print_json(uploaded)
    else:
        table(uploaded, [("FILE ID", lambda f: f["file_id"]), ("NAME", lambda f: cell(f["name"]))])


@app.command("list")
def list_files(
    page: Annotated[int, typer.Option("--page", help="Page number.")] = 1,
    page_size: Annotated[int, typer.Option("--page-size", help="Files per page (1..100).")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """List uploaded files, newest first."""
    with connect() as c:
        data = c.list_files(page, page_size)
    if as_json:
        print_json(data)
        return
    table(data["files"], FILE_COLUMNS, title="Files")
    if data["total"] > page * page_size:
        typer.echo(f"page {page} of {-(-data['total'] // page_size)}; next: --page {page + 1}")


@app.command()
def get(file_id: str, as_json: JsonFlag = False) -> None:
    """Show one file."""
    with connect() as c:
        f: dict[str, Any] = c.get_file(file_id)
    if as_json:
        print_json(f)
        return
    fields(
        f,
        [
            ("file_id", f.get("file_id")),
            ("name", f.get("name")),
            ("description", f.get("description")),
            ("purpose", f.get("purpose")),
            ("size", size(f.get("size"))),
            ("lines", f.get("lines")),
            ("md5", f.get("md5")),
            ("uploaded", f.get("gmt_create")),
        ],
    )


@app.command()
def delete(file_id: str, as_json: JsonFlag = False) -> None:
    """Delete a file (refused while a job that has not ended uses it)."""
    with connect() as c:
        out = c.delete_file(file_id)
    done(f"deleted {file_id}", out, as_json)
