"""The OpenAI fine-tuning API's view of dashtune's jobs and files: pure conversions.

One job has two views. The DashScope row is the truth; what only OpenAI's API has
(method, hyper-parameters as sent, metadata, suffix) sits in `openai_jobs` and is
optional: a job created through DashScope gets the values its row implies.
"""

from __future__ import annotations

from calendar import timegm
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from dashtune.domain.clock import utcnow
from dashtune.domain.errors import InvalidParameter
from dashtune.domain.redaction import hide_paths
from dashtune.domain.training import DPO_TYPES, TrainingType, parse_training_type
from dashtune.store.tables import Checkpoint, Job, JobLog, OpenAIJob, StoredFile

STATUSES = {
    "PENDING": "validating_files",
    "QUEUING": "queued",
    "RUNNING": "running",
    "CANCELING": "cancelling",
    "PAUSING": "pausing",
    "PAUSED": "paused",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "cancelled",
}
METHODS = {"supervised": TrainingType.SFT, "dpo": TrainingType.DPO_FULL}
# OpenAI's hyper-parameter -> dashtune's; learning_rate_multiplier is handled apart.
HYPER_KEYS = {"n_epochs": "n_epochs", "batch_size": "batch_size", "beta": "dpo_beta"}
METADATA_LIMITS = (16, 64, 512)  # pairs, key length, value length (as OpenAI documents)


def unix(value: datetime | None) -> int | None:
    """Seconds since the epoch of a naive-UTC time."""
    return timegm(value.timetuple()) if value else None


@dataclass(frozen=True)
class Method:
    """What `method` asked for, resolved to a training type and dashtune hyper-parameters."""

    type: str
    training_type: TrainingType
    declared: dict[str, Any]  # OpenAI's hyper-parameters as sent


def parse_method(method: Any, hyperparameters: Any, training_type: Any = None) -> Method:
    """`method` ({type, supervised|dpo: {hyperparameters}}) or the legacy top-level
    `hyperparameters`; `training_type` (extension) picks a LoRA variant."""
    if method is None:
        method = {"type": "supervised"}
    if not isinstance(method, dict) or method.get("type") not in METHODS:
        raise InvalidParameter(
            "method.type must be 'supervised' or 'dpo' (reinforcement is not supported)."
        )
    kind = str(method["type"])
    inner = method.get(kind) or {}
    if not isinstance(inner, dict):
        raise InvalidParameter(f"method.{kind} must be an object.")
    declared = inner.get("hyperparameters")
    if declared is None:
        declared = hyperparameters
    if declared is None:
        declared = {}
    if not isinstance(declared, dict):
        raise InvalidParameter("hyperparameters must be an object.")
    allowed = {"n_epochs", "batch_size", "learning_rate_multiplier"} | (
        {"beta"} if kind == "dpo" else set()
    )
    for key in declared:
        if key not in allowed:
            raise InvalidParameter(
                f"hyperparameters.{key} is not supported for method '{kind}'; "
                f"use {', '.join(sorted(allowed))}."
            )
    chosen = METHODS[kind]
    if training_type is not None:
        chosen = parse_training_type(training_type)
        if (chosen in DPO_TYPES) != (kind == "dpo") or chosen is TrainingType.CPT:
            raise InvalidParameter(f"training_type '{chosen}' does not fit method '{kind}'.")
    return Method(kind, chosen, dict(declared))


def dashtune_hyperparameters(
    declared: dict[str, Any], seed: Any, base_learning_rate: float
) -> dict[str, Any]:
    """OpenAI's names -> dashtune's; "auto" (or absent) leaves dashtune's default."""
    out: dict[str, Any] = {}
    for key, value in declared.items():
        if value is None or value == "auto":
            continue
        if key == "learning_rate_multiplier":
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidParameter(
                    "hyperparameters.learning_rate_multiplier must be a positive number or "
                    f"'auto', got {value!r}."
                )
            out["learning_rate"] = float(value) * base_learning_rate
        elif isinstance(value, str):
            raise InvalidParameter(f"hyperparameters.{key} must be a number or 'auto'.")
        else:
            out[HYPER_KEYS[key]] = value
    if seed is not None:
        out["seed"] = seed
    return out


def check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    pairs, key_len, value_len = METADATA_LIMITS
    if not isinstance(metadata, dict) or len(metadata) > pairs:
        raise InvalidParameter(f"metadata must be an object of at most {pairs} pairs.")
    for k, v in metadata.items():
        if not isinstance(v, str) or len(k) > key_len or len(v) > value_len:
            raise InvalidParameter(
                f"metadata: keys are strings of at most {key_len} characters and values "
                f"strings of at most {value_len}."
            )
    return dict(metadata)


def _effective(job: Job, extra: OpenAIJob | None) -> tuple[str, dict[str, Any]]:
    """(method type, hyper-parameters as OpenAI names them, resolved values filled in)."""
    kind = extra.method if extra else ("dpo" if job.training_type in DPO_TYPES else "supervised")
    hp = job.resolved_hyper_parameters
    values: dict[str, Any] = {
        "n_epochs": hp.get("n_epochs"),
        "batch_size": hp.get("batch_size"),
        "learning_rate_multiplier": "auto",
    }
    declared = extra.hyperparameters if extra else {}
    if declared.get("learning_rate_multiplier") not in (None, "auto"):
        values["learning_rate_multiplier"] = declared["learning_rate_multiplier"]
    if kind == "dpo":
        values["beta"] = hp.get("dpo_beta")
    return kind, values


def job_object(job: Job, extra: OpenAIJob | None, data_dir: Path | str) -> dict[str, Any]:
    """A `fine_tuning.job`; a failure's message without server paths (as the native view)."""
    kind, hyper = _effective(job, extra)
    status = STATUSES.get(job.status, job.status.lower())
    error = None
    if job.status == "FAILED":
        message = hide_paths(job.message, data_dir) if job.message else ""
        error = {"code": job.code or "failed", "message": message, "param": None}
    estimated = None
    if status == "running" and job.eta_seconds:
        estimated = int(unix(utcnow()) or 0) + int(job.eta_seconds)
    succeeded = job.status == "SUCCEEDED"
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": unix(job.create_time),
        "finished_at": unix(job.end_time),
        "error": error,
        "fine_tuned_model": job.finetuned_output if succeeded else None,
        "hyperparameters": {k: v for k, v in hyper.items() if k != "beta"},
        "method": {"type": kind, kind: {"hyperparameters": hyper}},
        "model": job.model,
        "organization_id": job.workspace_id,
        "result_files": [],
        "seed": int(job.resolved_hyper_parameters.get("seed", 0)),
        "status": status,
        "trained_tokens": job.usage if succeeded else None,
        "training_file": job.training_file_ids[0] if job.training_file_ids else "",
        "validation_file": job.validation_file_ids[0] if job.validation_file_ids else None,
        "estimated_finish": estimated,
        "integrations": [],
        "metadata": extra.job_metadata if extra else None,
        "user_provided_suffix": extra.suffix if extra else None,
    }


def event_id(job_id: str, seq: int) -> str:
    return f"ftevent-{job_id}-{seq}"


def event_seq(job_id: str, value: str) -> int:
    """The log sequence number an `after` cursor names; 400 when it is not one of this job's."""
    prefix = f"ftevent-{job_id}-"
    if not value.startswith(prefix) or not value[len(prefix) :].isdigit():
        raise InvalidParameter(f"after: '{value}' is not an event id of job {job_id}.")
    return int(value[len(prefix) :])


def event_object(row: JobLog, data_dir: Path | str) -> dict[str, Any]:
    """A `fine_tuning.job.event` from one job log line (state changes are log lines too),
    server paths hidden as in the native logs."""
    failed = row.line.startswith("Job failed")
    return {
        "id": event_id(row.job_id, row.seq),
        "object": "fine_tuning.job.event",
        "created_at": unix(row.created_at),
        "level": "error" if failed else "info",
        "message": hide_paths(row.line, data_dir),
        "data": {},
        "type": "message",
    }


def checkpoint_id(job_id: str, name: str) -> str:
    return f"ftckpt-{job_id}-{name}"


def checkpoint_object(c: Checkpoint) -> dict[str, Any]:
    m = c.metrics or {}
    metrics = {
        "step": float(c.step),
        "train_loss": m.get("loss"),
        "valid_loss": m.get("eval_loss"),
        "full_valid_loss": m.get("eval_loss"),
    }
    return {
        "id": checkpoint_id(c.job_id, c.name),
        "object": "fine_tuning.job.checkpoint",
        "created_at": unix(c.created_at),
        "fine_tuned_model_checkpoint": c.model_name,
        "fine_tuning_job_id": c.job_id,
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "step_number": c.step,
    }


def file_object(f: StoredFile) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.size,
        "created_at": unix(f.created_at),
        "filename": f.name,
        "purpose": f.purpose,
        "status": "processed",
        "expires_at": None,
        "status_details": None,
    }
