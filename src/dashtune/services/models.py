"""The models a workspace can call or train from: catalog base models, then its own
(fine-tuned outputs and exported checkpoints)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from dashtune.domain.clock import format_time
from dashtune.services.runtime import Runtime
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Model


def listing(rt: Runtime, who: Principal, model: str | None = None) -> list[dict[str, Any]]:
    """Every model visible to the caller, optionally only the one named `model`."""
    items: list[dict[str, Any]] = [
        {
            "model": e.id,
            "source": "catalog",
            "provider": "dashtune",
            "base_model": e.id,
            "description": e.description,
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
