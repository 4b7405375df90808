"""Before a job queues: can its model be had here, and can its chat template be masked?

Part of the scheduler's validation of PENDING jobs (services.engine.validate_pending), so
a job that would fail on its model fails before any worker starts, with the reason.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from dashtune.domain.chat_masking import TemplateError
from dashtune.domain.datasets import iter_objects
from dashtune.domain.training import TrainingType
from dashtune.services import chat_templates, hub, weights
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Job, StoredFile

CHAT_TYPES = frozenset({TrainingType.SFT, TrainingType.EFFICIENT_SFT})
ROWS_CHECKED = 200  # per file; the trainer re-checks every row as it encodes

MODEL_LOAD_ERROR = "ModelLoadError"
INVALID_CHAT_TEMPLATE = "InvalidChatTemplate"


def problem(rt: Runtime, job: Job) -> tuple[str, str] | None:
    """(code, message) of what stops `job` from training, or None when it may queue."""
    start = weights.resolve(rt, job.workspace_id, job.parent_model or job.model)
    if start.builtin:
        return None  # dashtune-tiny: built on demand, its template has generation markers
    base = Path(start.base_path)
    if not base.is_dir():
        source = rt.catalog.get(start.base_model).source
        if hub.is_repo_id(source):
            if rt.settings.hf_offline:
                return MODEL_LOAD_ERROR, hub.how_to_fetch(source, start.base_model)
            return None  # the worker downloads it and checks the template before training
        return MODEL_LOAD_ERROR, (
            f"The catalog entry '{start.base_model}' points at {base}, which is not a "
            "directory on this machine; fix its source in the catalog (docs/models.md)."
        )
    if TrainingType(job.training_type) not in CHAT_TYPES:
        return None
    template, tokens = chat_templates.read_template(base)
    try:
        chat_templates.check(template, tokens, _rows(rt, job))
    except TemplateError as exc:
        return INVALID_CHAT_TEMPLATE, f"Model '{job.model}': {exc}."
    return None


def _rows(rt: Runtime, job: Job) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for fid in job.training_file_ids + job.validation_file_ids:
        with rt.db.read() as s:
            f = s.get(StoredFile, fid)
        if f is not None:
            objects = iter_objects(rt.blobs.lines(f.blob))
            rows += [obj for _, obj in itertools.islice(objects, ROWS_CHECKED)]
    return rows
