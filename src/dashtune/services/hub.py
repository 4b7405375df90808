"""Catalog models that are Hugging Face repo ids: the local cache, downloads, the hint offline.

A repo id resolves to its snapshot directory in the local HF cache (`HF_HOME`); a model
not there yet is downloaded by the job's worker on first use, with progress in the job's
logs, unless `DASHTUNE_HF_OFFLINE` forbids it. huggingface_hub does the work
(`snapshot_download`, its tqdm hook for progress); it imports no torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# What a training or serving process loads; other weight formats would be fetched twice.
PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken", "*.py"]


def is_repo_id(source: str) -> bool:
    """A catalog source that names a Hugging Face repo (not builtin:, not a directory)."""
    return not (source.startswith(("builtin:", "/", ".", "~")))


def cached_snapshot(repo: str) -> str | None:
    """The repo's snapshot dir in the local HF cache when its config is there, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo, "config.json")
    except ValueError:  # not a valid repo id (HFValidationError): nothing can be cached
        return None
    if not isinstance(found, str):
        return None
    return found.rsplit("/", 1)[0]


def how_to_fetch(repo: str, model_id: str) -> str:
    """The words an offline error ends with: the command that fills the cache, or the other way."""
    return (
        f"Model '{model_id}' (Hugging Face repo {repo}) is not in this machine's Hugging Face "
        f"cache and DASHTUNE_HF_OFFLINE=true forbids downloading it. Put it in the cache with "
        f"`hf download {repo}` (huggingface_hub >= 1.0; older: `huggingface-cli download "
        f"{repo}`), or set the catalog entry's source to a local directory that holds the "
        "model (docs/models.md)."
    )


def download(repo: str, log: Callable[[str], None], every: float = 10.0) -> str:
    """Fetch `repo` into the HF cache, logging progress at most every `every` seconds."""
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    class LogProgress(tqdm):
        """snapshot_download's file counter, reported to the job's log instead of a terminal."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = _Discard()
            super().__init__(*args, **kwargs)
            self._said = time.monotonic()

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            # snapshot_download also makes its byte counters (unit "B") of this class.
            if self.unit == "B":
                return shown
            if time.monotonic() - self._said >= every or self.n == self.total:
                self._said = time.monotonic()
                log(f"downloading {repo}: {self.n}/{self.total} files")
            return shown

    log(f"downloading {repo} from the Hugging Face hub (first use of this model)")
    path: str = snapshot_download(repo, allow_patterns=PATTERNS, tqdm_class=LogProgress)
    log(f"downloaded {repo} to {path}")
    return path


class _Discard:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        return None
