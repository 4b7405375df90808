"""The models a workspace can call or train from: catalog base models, then its own
(fine-tuned outputs and exported checkpoints)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from dashtune.catalog import CatalogEntry
from dashtune.domain.clock import format_time
from dashtune.services import hub
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Model


def availability(rt: Runtime, entry: CatalogEntry) -> dict[str, Any]:
    """Whether a catalog model's weights are on this machine: `available` and in words."""
    if entry.builtin:
        return {"available": True, "weights": "built in (generated on first use)"}
    if not hub.is_repo_id(entry.source):
        path = Path(entry.source).expanduser().resolve()
        if path.is_dir():
            return {"available": True, "weights": f"local directory {path}"}
        return {"available": False, "weights": f"missing: {path} is not a directory"}
    snapshot = hub.cached_snapshot(entry.source)
    if snapshot:
        return {"available": True, "weights": f"in the Hugging Face cache ({entry.source})"}
    if rt.settings.hf_offline:
        return {
            "available": False,
            "weights": f"not downloaded; offline: run `hf download {entry.source}`",
        }
    return {"available": False, "weights": f"downloaded on first use from {entry.source}"}


def listing(rt: Runtime, who: Principal, model: str | None = None) -> list[dict[str, Any]]:
    """Every model visible to the caller, optionally only the one named `model`."""
    items: list[dict[str, Any]] = [
        {
            "model": e.id,
            "source": "catalog",
            "provider": "dashtune",
            "base_model": e.id,
            "description": e.description,
            **availability(rt, e),
        }
        for e in rt.catalog.entries.values()
        if model is None or e.id == model
    ]
    with rt.db.read() as s:
        q = select(Model).where(Model.workspace_id == who.workspace_id).order_by(Model.id)
        if model is not None:
            q = q.where(Model.name == model)
        for row in s.scalars(q):
            items.append(
                {
                    "model": row.name,
                    "source": "fine-tune",
                    "provider": "dashtune",
                    "base_model": row.base_model,
                    "job_id": row.job_id,
                    "checkpoint": row.checkpoint,
                    "kind": row.kind,
                    "create_time": format_time(row.created_at),
                }
            )
    return items
