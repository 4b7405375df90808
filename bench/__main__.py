"""Run benchmark sections: `python -m bench [SECTION ...] [--option ...]`.

With no section named, every registered section runs. Each section is a module with
`run(args: list[str]) -> None` that prints its own results; it is imported only when it
runs, so a section's heavy imports (torch, a model) cost nothing to the others. The
options after the section names go to every section that runs (each parses what it
knows with `argparse.parse_known_args`); `python -m bench SECTION --help` shows them.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

from rich.console import Console

# name -> module; add a line here to add a section.
SECTIONS: dict[str, str] = {
    "control_plane": "bench.control_plane",
    "load": "bench.api_under_load",
    "resume": "bench.resume",
    "serving": "bench.serving",
    "training": "bench.training",
    "cluster": "bench.cluster",
    "estimate": "bench.estimate",
}


def main(argv: list[str]) -> int:
    """Run the named sections (default: all) in order; non-zero exit if any failed."""
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, rest = argv[:split], argv[split:]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown or (not names and rest and rest[0] in ("-h", "--help")):
        print(__doc__)
        print("sections: " + ", ".join(SECTIONS))
        return 2 if unknown else 0
    names = names or list(SECTIONS)
    console = Console()
    failed: list[str] = []
    for name in names:
        console.rule(f"[bold]bench {name}")
        started = time.perf_counter()
        try:
            importlib.import_module(SECTIONS[name]).run(rest)
        except KeyboardInterrupt:
            raise
        except Exception:
            traceback.print_exc()
            failed.append(name)
        console.print(f"[dim]section {name} took {time.perf_counter() - started:.1f} s[/dim]")
    if failed:
        console.print(f"[red]failed sections: {', '.join(failed)}[/red]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
