"""Users never see the server's filesystem: paths in job logs, job and deployment
messages and error messages are shown relative to a named root (`<data_dir>/jobs/...`,
`<python>/site-packages/...`), so tracebacks stay useful without naming directories."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import dashtune


def _roots(data_dir: str) -> list[tuple[str, str]]:
    named = [
        (data_dir, "<data_dir>"),
        (str(Path(data_dir).resolve()), "<data_dir>"),
        (str(Path(dashtune.__file__).resolve().parent), "<dashtune>"),
        (sys.prefix, "<python>"),
        (sys.exec_prefix, "<python>"),
        (sys.base_prefix, "<python>"),
        (os.getcwd(), "<cwd>"),
        (tempfile.gettempdir(), "<tmp>"),
        (str(Path.home()), "~"),
    ]
    # Longest first, so the most specific root names a path; "/" alone names nothing.
    keep = {root.rstrip("/"): name for root, name in named if root.startswith("/") and root != "/"}
    return sorted(keep.items(), key=lambda item: -len(item[0]))


@lru_cache(maxsize=8)
def _pattern(data_dir: str) -> tuple[re.Pattern[str], dict[str, str]]:
    roots = _roots(data_dir)
    alternatives = "|".join(re.escape(root) for root, _ in roots)
    return re.compile(f"(?:{alternatives})(?=/|[^\\w.-]|$)"), dict(roots)


def hide_paths(text: str, data_dir: Path | str = "") -> str:
    """`text` with every known server directory replaced by its name."""
    data = str(Path(data_dir).absolute()) if data_dir else os.getcwd()
    pattern, names = _pattern(data)
    return pattern.sub(lambda m: names[m.group()], text)
