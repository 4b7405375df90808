"""Where a model's weights are on disk: catalog base models and tuned outputs.

Pure path resolution, no torch: the worker and the serving process build the built-in
tiny model themselves (`trainer.tiny.ensure_tiny_model`) when `builtin` is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dashtune.domain.errors import InvalidParameter
from dashtune.services import hub
from dashtune.services.engine import model_path
from dashtune.services.runtime import Runtime


@dataclass(frozen=True)
class Weights:
    base_path: str  # a HF model dir, or a repo id not yet in the local HF cache
    adapter_path: str | None  # LoRA adapter on top of base_path
    builtin: bool  # base_path is the built-in tiny model, to be generated if missing
    base_model: str  # catalog id of the root base model


def base_weights(rt: Runtime, model_id: str) -> tuple[str, bool]:
    entry = rt.catalog.get(model_id)
    if entry.builtin:
        return str((rt.settings.models_dir / "builtin" / model_id).resolve()), True
    source = entry.source
    if not hub.is_repo_id(source):
        return str(Path(source).expanduser().resolve()), False
    return hub.cached_snapshot(source) or source, False


def resolve(rt: Runtime, workspace_id: str, name: str) -> Weights:
    """A catalog id or a tuned model of the workspace -> the paths to load."""
    if name in rt.catalog:
        path, builtin = base_weights(rt, name)
        return Weights(path, None, builtin, name)
    row = model_path(rt, workspace_id, name)
    if row is None:
        raise InvalidParameter(f"Model '{name}' not found in the catalog or this workspace.")
    if row.kind == "full":
        return Weights(row.path, None, False, row.base_model)
    path, builtin = base_weights(rt, row.base_model)
    # An adapter trained on a full fine-tune sits on that model, not on the catalog base:
    # the trainer records the absolute base path in adapter_config.json.
    trained_on = _adapter_base(row.path)
    if trained_on and trained_on != path:
        return Weights(trained_on, row.path, False, row.base_model)
    return Weights(path, row.path, builtin, row.base_model)


def _adapter_base(adapter_dir: str) -> str | None:
    try:
        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path")
    return str(base) if base else None
