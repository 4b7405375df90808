"""The model catalog: which base model ids exist and where their weights come from.

A YAML file maps ids to a Hugging Face repo id (loaded from the local HF cache, never
downloaded at run time), a local directory, or `builtin:tiny` (generated locally).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from dashtune.domain.errors import InvalidParameter

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
TINY = "dashtune-tiny"


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    source: str  # "builtin:tiny", an absolute directory, or a HF repo id
    description: str = ""

    @property
    def builtin(self) -> bool:
        return self.source.startswith("builtin:")


class Catalog:
    def __init__(self, entries: dict[str, CatalogEntry]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        raw = yaml.safe_load((path or DEFAULT_CATALOG).read_text()) or {}
        models = raw.get("models") or {}
        entries = {
            mid: CatalogEntry(
                id=mid,
                source=str(spec["source"] if isinstance(spec, dict) else spec),
                description=str(spec.get("description", "")) if isinstance(spec, dict) else "",
            )
            for mid, spec in models.items()
        }
        return cls(entries)

    def __contains__(self, model_id: str) -> bool:
        return model_id in self.entries

    def get(self, model_id: str) -> CatalogEntry:
        entry = self.entries.get(model_id)
        if entry is None:
            known = ", ".join(sorted(self.entries))
            raise InvalidParameter(
                f"Model '{model_id}' is not in the model catalog or a fine-tuned model of "
                f"this workspace; known base models: {known}."
            )
        return entry
