"""How results look: rich tables for people, plain JSON on stdout for scripts.

With `--json` nothing but one JSON document goes to stdout (progress and errors go to
stderr), so `dashtune jobs get ID --json | jq .status` always parses.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _width(stream: object) -> int | None:
    """Piped output is not cut at 80 columns (rich's default off a terminal)."""
    isatty = getattr(stream, "isatty", None)
    if (isatty and isatty()) or os.environ.get("COLUMNS"):
        return None
    return 200


# soft_wrap: long messages stay one line (rich would hard-wrap them at the width).
console = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))

JsonFlag = Annotated[
    bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")
]

STATUS_STYLE = {
    "PENDING": "yellow",
    "QUEUING": "yellow",
    "DEPLOYING": "cyan",
    "RUNNING": "cyan",
    "CANCELING": "magenta",
    "PAUSING": "yellow",
    "PAUSED": "yellow",
    "DELETING": "magenta",
    "SUCCEEDED": "green",
    "FAILED": "red",
    "CANCELED": "dim",
}

Column = tuple[str, Callable[[dict[str, Any]], Any]]


def print_json(value: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def status_text(status: str | None) -> str:
    status = status or "-"
    style = STATUS_STYLE.get(status)
    return f"[{style}]{status}[/{style}]" if style else escape(status)


def cell(value: Any) -> str:
    """A value as table text: blanks as '-', lists comma-joined, markup escaped."""
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list | tuple):
        return escape(", ".join(str(v) for v in value))
    if isinstance(value, dict):
        return escape(json.dumps(value, ensure_ascii=False))
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def table(
    rows: Iterable[dict[str, Any]], columns: Sequence[Column], title: str | None = None
) -> None:
    """Rows as a table on stdout; `columns` are (header, getter) pairs."""
    t = Table(title=title, header_style="bold", title_justify="left")
    for i, (header, _) in enumerate(columns):
        # The first column is the id people copy: never broken across lines.
        t.add_column(header, overflow="fold", no_wrap=i == 0)
    count = 0
    for row in rows:
        t.add_row(*(str(get(row)) for _, get in columns))
        count += 1
    if count:
        console.print(t)
    else:
        console.print(f"[dim]No {title.lower() if title else 'rows'}.[/dim]")


def fields(obj: dict[str, Any], rows: Sequence[tuple[str, Any]]) -> None:
    """One object as a two-column 'field  value' table on stdout."""
    t = Table(show_header=False, box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for label, value in rows:
        t.add_row(label, value if isinstance(value, str) else cell(value))
    console.print(t)


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def percent(p: float | None) -> str:
    return "-" if p is None else f"{p * 100:.0f}%"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def done(message: str, obj: Any, as_json: bool) -> None:
    """Confirm an action: its JSON payload for scripts, one line for people."""
    if as_json:
        print_json(obj)
    else:
        console.print(message)
