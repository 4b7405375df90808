"""Errors the user sees: one type for every failed call, and the boundary that prints it.

Every user command runs inside `ReportedGroup`/`ReportedCommand`, so an `ApiError`
anywhere below becomes `Error: <Code>: <message>` on stderr and exit status 1, never
a traceback.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

EXIT_ERROR = 1


class ApiError(Exception):
    """A DashScope error envelope (or a transport failure dressed as one)."""

    def __init__(
        self, code: str, message: str, *, status: int | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id


def report(exc: ApiError) -> None:
    """Print the error's code and message on stderr (request id too, for bug reports)."""
    from rich.markup import escape

    from dashtune.client.render import err_console

    text = f"[bold red]Error:[/bold red] {escape(exc.code)}: {escape(exc.message)}"
    if exc.request_id:
        text += f" [dim](request_id {exc.request_id})[/dim]"
    err_console.print(text, highlight=False)


class ReportedCommand(TyperCommand):
    """A command whose `ApiError` ends the program with a message instead of a traceback."""

    # ctx is typer's vendored click Context, which typer does not export publicly.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            report(exc)
            raise typer.Exit(EXIT_ERROR) from None


class ReportedGroup(TyperGroup):
    """A command group whose subcommands report `ApiError` like `ReportedCommand`.

    `--json` may also come before the subcommand (`dashtune --json jobs list`): the group
    hands it on to the subcommand, whose option it is.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        leading = 0
        while leading < len(args) and args[leading] == "--json":
            leading += 1
        if leading and leading < len(args):
            args = [*args[leading:], "--json"]
        return list(super().parse_args(ctx, args))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            report(exc)
            raise typer.Exit(EXIT_ERROR) from None
