"""Wire shapes (pydantic) of the objects the API returns, built from store rows."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from dashtune.domain.clock import format_time
from dashtune.domain.states import JobStatus, allowed_actions
from dashtune.store.tables import Checkpoint, Deployment, Job, StoredFile


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
    metrics: dict[str, Any]
    allowed_actions: list[str]


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


def job_view(j: Job) -> dict[str, Any]:
    failed = j.status == JobStatus.FAILED.value
    return JobObject(
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
        message=j.message if failed else None,
        progress=round(j.progress, 4),
        eta_seconds=j.eta_seconds,
        metrics=j.metrics or {},
        allowed_actions=allowed_actions(j.status),
    ).model_dump(exclude_none=True)


def checkpoint_view(c: Checkpoint) -> dict[str, Any]:
    return CheckpointObject(
        checkpoint=c.name,
        full_name=f"{c.job_id}-{c.name}",
        job_id=c.job_id,
        model_name=c.model_name,
        status=c.status,
        create_time=c.created_at.strftime("%Y-%m-%dT%H:%M:%S"),
        step=c.step,
        metrics=c.metrics,
    ).model_dump()


def deployment_view(d: Deployment) -> dict[str, Any]:
    return DeploymentObject(
        deployed_model=d.deployed_model,
        model_name=d.model_name,
        base_model=d.base_model,
        status=d.status,
        capacity=d.capacity,
        ready_capacity=d.ready_capacity,
        workspace_id=d.workspace_id,
        gmt_create=d.gmt_create.strftime("%Y-%m-%dT%H:%M:%S"),
        gmt_modified=d.gmt_modified.strftime("%Y-%m-%dT%H:%M:%S"),
        creator=d.creator,
        modifier=d.modifier,
        message=d.message,
    ).model_dump(exclude_none=True)
