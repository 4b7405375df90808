"""Typer apps of the user commands; `dashtune.cli` mounts them beside `serve` and `keys`."""
