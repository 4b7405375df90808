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


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(64))
    rank: Mapped[int] = mapped_column(Integer)
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
    metrics: Mapped[dict[str, Any]]
    log_count: Mapped[int] = mapped_column(Integer, default=0)
    worker_host: Mapped[str | None] = mapped_column(String(200), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(), nullable=True)
    __table_args__ = (
        Index("ix_jobs_ws_rank", "workspace_id", "rank"),
        Index("ix_jobs_ws_base_rank", "workspace_id", "base_model", "rank"),
        Index("ix_jobs_ws_output", "workspace_id", "finetuned_output"),
    )


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
