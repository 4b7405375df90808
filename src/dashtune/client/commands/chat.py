"""`dashtune chat MODEL`: talk to a deployed or base model through the compat endpoint.

One-shot with `-m "message"` (the reply on stdout, streamed), or interactive: each
line you type is a turn, the history is sent along; `/reset` clears it, `/help` lists the
commands (handled here, never sent to the model), Ctrl-D or `/exit` ends.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated, Any

import typer

from dashtune.client.http import Client, connect
from dashtune.client.render import err_console, print_json

HELP = """commands (never sent to the model):
  /reset   forget the conversation so far (the system prompt stays)
  /help    this list
  /exit    end the chat (or Ctrl-D)
anything else is your next message."""


def _reply(
    client: Client, model: str, history: list[dict[str, str]], params: dict[str, Any]
) -> str:
    """Stream one assistant reply to stdout and return it."""
    pieces = []
    for piece in client.chat_stream(model, history, **params):
        sys.stdout.write(piece)
        sys.stdout.flush()
        pieces.append(piece)
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(pieces)


def chat(
    model: Annotated[str, typer.Argument(help="Deployed model name (or a base model).")],
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Send one message, print the reply, exit.")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", help="Reply length cap.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature (0: greedy).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for repeatable replies.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With -m: print the whole completion object as JSON.")
    ] = False,
) -> None:
    """Chat with a model (POST /compatible-mode/v1/chat/completions, streamed)."""
    params: dict[str, Any] = {}
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if temperature is not None:
        params["temperature"] = temperature
    if seed is not None:
        params["seed"] = seed
    base: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    with connect() as c:
        if message is not None:
            turn = [*base, {"role": "user", "content": message}]
            if as_json:
                print_json(c.chat(model, turn, **params))
            else:
                _reply(c, model, turn, params)
            return
        history = list(base)
        interactive = sys.stdin.isatty()
        if interactive:
            err_console.print(
                f"[dim]Chatting with {model}. /help lists commands; Ctrl-D ends.[/dim]"
            )
        while True:
            try:
                line = input("you> " if interactive else "")
            except (EOFError, KeyboardInterrupt):
                break
            command = line.strip()
            if not command:
                continue
            if command == "/reset":
                turns = sum(1 for m in history if m["role"] == "user")
                history = list(base)
                err_console.print(f"[dim]history cleared ({turns} turn(s) forgotten)[/dim]")
                continue
            if command in ("/help", "/?"):
                err_console.print(HELP, markup=False)
                continue
            if command.startswith("/") and command.split()[0] in ("/exit", "/quit"):
                break
            if re.fullmatch(r"/[a-z?]+", command):
                err_console.print(f"unknown command {command}; /help lists the commands")
                continue
            history.append({"role": "user", "content": line})
            history.append({"role": "assistant", "content": _reply(c, model, history, params)})
