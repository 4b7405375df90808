"""SQLAlchemy tables. The schema itself is created by the Alembic migrations beside this."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime()}


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime]


class Workspace(Base):
    __tablename__ = "workspaces"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Jobs in this workspace; a job's `rank` runs 1..job_count with no gaps, so a page
    # of the list is an index range, whatever its number (see store/jobs.py).
    job_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]


class Membership(Base):
    __tablename__ = "memberships"
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"), primary_key=True)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    # Workspace this key uses when no X-DashScope-WorkSpace header is sent.
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id"))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]


class StoredFile(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(500))
    description: Mapped[str] = mapped_column(Text, default="")
    purpose: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))
    lines: Mapped[int] = mapped_column(Integer)
    blob: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]
    __table_args__ = (Index("ix_files_ws_created", "workspace_id", "created_at"),)


class ModelJobCount(Base):
    """Jobs per (workspace, base model): the `total` of the filtered list without a COUNT."""

    __tablename__ = "model_job_counts"
    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(300), primary_key=True)
    job_count: Mapped[int] = mapped_column(Integer, default=0)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
    # Rank among the workspace's jobs of the same base_model, 1..ModelJobCount.job_count
    # with no gaps: a page of the `model=`-filtered list is an index range as well.
    model_rank: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[str] = mapped_column(String(32), index=True)
    modifier: Mapped[str] = mapped_column(String(32))
    job_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    model: Mapped[str] = mapped_column(String(300))
    base_model: Mapped[str] = mapped_column(String(300))
    training_type: Mapped[str] = mapped_column(String(32))
    training_file_ids: Mapped[list[Any]]
    validation_file_ids: Mapped[list[Any]]
    hyper_parameters: Mapped[dict[str, Any]]
    resolved_hyper_parameters: Mapped[dict[str, Any]]
    finetuned_output: Mapped[str] = mapped_column(String(300))
    parent_model: Mapped[str | None] = mapped_column(String(300), nullable=True)
    create_time: Mapped[datetime]
    start_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    usage: Mapped[int] = mapped_column(BigInteger, default=0)
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    eta_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    total_steps: Mapped[int | None] = mapped_column(Integer, nullable=True)  # trainer's max_steps
    metrics: Mapped[dict[str, Any]]
    log_count: Mapped[int] = mapped_column(Integer, default=0)
    worker_host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    # Worker runs started: 1 + the retries after a lost worker (pauses do not count).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Who paused a PAUSED job: "user", or "shutdown" (resumed when its host starts again).
    paused_by: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # {"executor", "nodes", "devices", "num_workers", ...}: where the workers run.
    placement: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    scheduler_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    __table_args__ = (
        Index("ix_jobs_ws_rank", "workspace_id", "rank"),
        Index("ix_jobs_ws_base_model_rank", "workspace_id", "base_model", "model_rank"),
        Index("ix_jobs_ws_output", "workspace_id", "finetuned_output"),
    )


class SchedulerLease(Base):
    """A live scheduler renews its row; its jobs are re-attached by another once it expires."""

    __tablename__ = "schedulers"
    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    executor: Mapped[str] = mapped_column(String(16))
    inventory: Mapped[dict[str, Any]]  # domain.resources.Inventory as JSON
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]


class JobLog(Base):
    __tablename__ = "job_logs"
    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)  # 1-based, no gaps
    line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class JobMetric(Base):
    __tablename__ = "job_metrics"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    step: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)  # checkpoint-<step>
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(16))  # export state
    model_name: Mapped[str] = mapped_column(String(300))
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class Model(Base):
    """A callable, trainable model: a job's final output or an exported checkpoint."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(300))
    job_id: Mapped[str] = mapped_column(String(32), index=True)
    checkpoint: Mapped[str | None] = mapped_column(String(64), nullable=True)
    base_model: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))  # "lora" | "full"
    path: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime]
    __table_args__ = (UniqueConstraint("workspace_id", "name", name="uq_models_ws_name"),)


class Deployment(Base):
    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    deployed_model: Mapped[str] = mapped_column(String(300))
    model_name: Mapped[str] = mapped_column(String(300))
    base_model: Mapped[str] = mapped_column(String(300))
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16))
    capacity: Mapped[int] = mapped_column(Integer)
    ready_capacity: Mapped[int] = mapped_column(Integer, default=0)
    creator: Mapped[str] = mapped_column(String(32))
    modifier: Mapped[str] = mapped_column(String(32))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    gmt_create: Mapped[datetime]
    gmt_modified: Mapped[datetime]
    __table_args__ = (
        UniqueConstraint("workspace_id", "deployed_model", name="uq_deployments_ws_name"),
    )


class OpenAIJob(Base):
    """What a job created through the OpenAI fine-tuning API adds to the DashScope row."""

    __tablename__ = "openai_jobs"
    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))  # "supervised" | "dpo"
    hyperparameters: Mapped[dict[str, Any]]  # as the caller sent them ("auto" kept)
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Webhook(Base):
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[Any]]
    secret: Mapped[str] = mapped_column(String(100))  # whsec_...
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """The outbox: one row per (webhook, event), written with the state change it reports.

    `id` is the `webhook-id` header, the same on every attempt.
    """

    __tablename__ = "webhook_deliveries"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # order
    id: Mapped[str] = mapped_column(String(40), unique=True)
    webhook_id: Mapped[str] = mapped_column(String(40), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[list[Any]]  # [{at, status_code, error}]
    next_attempt_at: Mapped[datetime]
    created_at: Mapped[datetime]
    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)
