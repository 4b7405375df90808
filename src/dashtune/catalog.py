"""The model catalog: which base model ids exist and where their weights come from.

A YAML file maps ids to a Hugging Face repo id (from the local HF cache, downloaded on
first use unless DASHTUNE_HF_OFFLINE), a local directory, or `builtin:tiny` (generated
locally). docs/models.md describes the format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dashtune.domain.errors import InvalidParameter

log = logging.getLogger("dashtune.catalog")
DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
TINY = "dashtune-tiny"


def parse(text: str) -> dict[str, CatalogEntry]:
    """The entries of a catalog file's text; ValueError names what is malformed."""
    raw = yaml.safe_load(text) or {}
    models = raw.get("models") if isinstance(raw, dict) else None
    if not isinstance(models, dict):
        raise ValueError("the file needs a top-level 'models:' mapping of ids to entries")
    entries = {}
    for mid, spec in models.items():
        source = spec.get("source") if isinstance(spec, dict) else spec
        if not isinstance(source, str) or not source.strip():
            raise ValueError(
                f"model '{mid}' needs a 'source' (builtin:tiny, a directory or a repo id)"
            )
        description = spec.get("description", "") if isinstance(spec, dict) else ""
        defaults = spec.get("defaults") if isinstance(spec, dict) else None
        if defaults is not None and not isinstance(defaults, dict):
            raise ValueError(f"model '{mid}': 'defaults' must be a mapping of hyper-parameters")
        entries[str(mid)] = CatalogEntry(
            str(mid), source.strip(), str(description or ""), dict(defaults or {})
        )
    return entries


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    source: str  # "builtin:tiny", an absolute directory, or a HF repo id
    description: str = ""
    # Hyper-parameter defaults for jobs on this model, e.g. {"num_workers": 2}.
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def builtin(self) -> bool:
        return self.source.startswith("builtin:")


class Catalog:
    """The entries of the catalog file, re-read when the file changes (no restart needed).

    Each access compares the file's mtime with the one read; a file that no longer parses
    keeps the entries read last, and `error` says why, so a half-saved edit breaks nothing.
    """

    def __init__(self, entries: dict[str, CatalogEntry], path: Path | None = None) -> None:
        self._entries = entries
        self.path = path
        self.error: str | None = None
        self._mtime = self._stat()

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        file = path or DEFAULT_CATALOG
        return cls(parse(file.read_text()), file)

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime if self.path else None
        except OSError:
            return None

    def reload(self, force: bool = False) -> bool:
        """Re-read the file if it changed (or `force`); True when the entries were replaced."""
        mtime = self._stat()
        if self.path is None or (mtime == self._mtime and not force):
            return False
        self._mtime = mtime
        try:
            self._entries = parse(self.path.read_text())
        except (OSError, ValueError, yaml.YAMLError) as exc:
            self.error = f"catalog {self.path} not reloaded, the previous entries stay: {exc}"
            log.warning(self.error)
            return False
        self.error = None
        log.info("catalog %s reloaded: %d models", self.path, len(self._entries))
        return True

    @property
    def entries(self) -> dict[str, CatalogEntry]:
        self.reload()
        return self._entries

    def __contains__(self, model_id: str) -> bool:
        return model_id in self.entries

    def get(self, model_id: str) -> CatalogEntry:
        entries = self.entries
        entry = entries.get(model_id)
        if entry is None:
            known = ", ".join(sorted(entries))
            raise InvalidParameter(
                f"Model '{model_id}' is not in the model catalog or a fine-tuned model of "
                f"this workspace; known base models: {known}."
            )
        return entry
