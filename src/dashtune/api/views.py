"""Wire shapes (pydantic) of the objects the API returns, built from store rows."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dashtune.domain.clock import format_time
from dashtune.domain.redaction import hide_paths
from dashtune.domain.states import JobStatus, allowed_actions
from dashtune.services.job_reads import JobRow
from dashtune.store.tables import Checkpoint, Deployment, Job, StoredFile

log = logging.getLogger("dashtune.api")


class FileObject(BaseModel):
    file_id: str
    name: str
    description: str
    purpose: str
    size: int
    md5: str
    gmt_create: str
    upload_time: str
    lines: int


class JobObject(BaseModel):
    job_id: str
    job_name: str
    status: str
    model: str
    base_model: str
    training_file_ids: list[str]
    validation_file_ids: list[str]
    hyper_parameters: dict[str, Any]
    resolved_hyper_parameters: dict[str, Any]
    training_type: str
    create_time: str
    end_time: str | None = None
    finetuned_output: str
    workspace_id: str
    user_identity: str
    creator: str
    modifier: str
    group: str = "llm"
    usage: int
    code: str | None = None
    message: str | None = None
    progress: float
    eta_seconds: float | None = None
    total_steps: int | None = None  # the trainer's step count, once training started
    metrics: dict[str, Any]
    allowed_actions: list[str]
    attempts: int  # worker runs so far: 1 + retries after a lost worker (dashtune extension)
    # Extension: where the workers run, once started ({"executor", "nodes", "devices",
    # "num_workers"}); `nodes` are Ray node ids on Ray (nodes of one machine share an IP).
    placement: dict[str, Any] | None = None


class CheckpointObject(BaseModel):
    checkpoint: str
    full_name: str
    job_id: str
    model_name: str
    status: str
    create_time: str
    step: int
    metrics: dict[str, Any]


class DeploymentObject(BaseModel):
    deployed_model: str
    model_name: str
    base_model: str
    status: str
    capacity: int
    ready_capacity: int
    workspace_id: str
    gmt_create: str
    gmt_modified: str
    creator: str
    modifier: str
    # The 1.x SDK's DeploymentOutput declares it and cannot repr() an object without it.
    base_capacity: int = 1
    charge_type: str = "post_paid"
    message: str | None = None


def file_view(f: StoredFile) -> dict[str, Any]:
    created = format_time(f.created_at) or ""
    return FileObject(
        file_id=f.id,
        name=f.name,
        description=f.description,
        purpose=f.purpose,
        size=f.size,
        md5=f.md5,
        gmt_create=created,
        upload_time=created,
        lines=f.lines,
    ).model_dump()


def renderable(value: Any) -> Any:
    """`value` made strict JSON: non-finite floats become null, unencodable text is replaced.

    For rows stored before create validated them: one bad row must not fail a whole list.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
    if isinstance(value, dict):
        return {renderable(k): renderable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [renderable(v) for v in value]
    return value


def safe_view(view: dict[str, Any], what: str) -> dict[str, Any]:
    """`view` if it renders as strict UTF-8 JSON, else its `renderable` form (and a warning)."""
    try:
        json.dumps(view, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        log.warning("%s holds values that are not strict JSON; rendered them replaced", what)
        return dict(renderable(view))
    return view


def job_view(j: Job | JobRow, data_dir: Path | str = "", *, checked: bool = True) -> dict[str, Any]:
    """The wire form of a job. `checked=False` skips `safe_view`'s JSON check: for a caller
    that renders the body once and falls back to the checked view when it does not encode
    (`envelope.ok(..., fallback=)`), so a good job is encoded once, not twice."""
    failed = j.status == JobStatus.FAILED.value
    view = JobObject(
        job_id=j.id,
        job_name=j.job_name,
        status=j.status,
        model=j.model,
        base_model=j.base_model,
        training_file_ids=j.training_file_ids,
        validation_file_ids=j.validation_file_ids,
        hyper_parameters=j.hyper_parameters,
        resolved_hyper_parameters=j.resolved_hyper_parameters,
        training_type=j.training_type,
        create_time=format_time(j.create_time) or "",
        end_time=format_time(j.end_time),
        # Always present: the 1.x SDK's FineTuneOutput cannot even repr() a job without it.
        finetuned_output=j.finetuned_output,
        workspace_id=j.workspace_id,
        user_identity=j.user_id,
        creator=j.user_id,
        modifier=j.modifier,
        usage=j.usage,
        code=j.code if failed else None,
        message=hide_paths(j.message, data_dir) if failed and j.message else None,
        progress=round(j.progress, 4),
        eta_seconds=j.eta_seconds,
        total_steps=j.total_steps,
        metrics=j.metrics or {},
        allowed_actions=allowed_actions(j.status),
        attempts=j.attempts or 0,
        placement=j.placement,
    ).model_dump(exclude_none=True)
    return safe_view(view, f"job {j.id}") if checked else view


def checkpoint_view(c: Checkpoint) -> dict[str, Any]:
    return CheckpointObject(
        checkpoint=c.name,
        full_name=f"{c.job_id}-{c.name}",
        job_id=c.job_id,
        model_name=c.model_name,
        status=c.status,
        create_time=format_time(c.created_at) or "",
        step=c.step,
        metrics=c.metrics,
    ).model_dump()


def deployment_view(d: Deployment, data_dir: Path | str = "") -> dict[str, Any]:
    return DeploymentObject(
        deployed_model=d.deployed_model,
        model_name=d.model_name,
        base_model=d.base_model,
        status=d.status,
        capacity=d.capacity,
        ready_capacity=d.ready_capacity,
        workspace_id=d.workspace_id,
        gmt_create=format_time(d.gmt_create) or "",
        gmt_modified=format_time(d.gmt_modified) or "",
        creator=d.creator,
        modifier=d.modifier,
        message=hide_paths(d.message, data_dir) if d.message else None,
    ).model_dump(exclude_none=True)
