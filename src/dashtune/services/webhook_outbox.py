"""The webhook outbox: events written in the transaction of the state change they report,
then claimed, attempted and recorded by the dispatcher (scheduler/webhooks.py).

Writing the rows is a `before_flush` listener on every session: whichever code path
changes a job's or a deployment's status (the API, the scheduler, a worker process, the
engines added later), the outbox row commits or rolls back with that change, and no path
can forget to write it. A crash after the commit loses nothing: the row waits in the
database until a dispatcher delivers it (at least once, the same `webhook-id` each time).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.orm import Session

from dashtune.domain.clock import format_time, utcnow
from dashtune.domain.webhook_events import DEPLOYMENT_EVENTS, JOB_EVENTS, retry_delay
from dashtune.services.runtime import Runtime
from dashtune.store.tables import Deployment, Job, Webhook, WebhookDelivery

_installed = False


def _job_data(j: Job) -> dict[str, Any]:
    return {
        "job_id": j.id,
        "status": j.status,
        "model": j.model,
        "base_model": j.base_model,
        "training_type": j.training_type,
        "finetuned_output": j.finetuned_output,
        "workspace_id": j.workspace_id,
        "usage": j.usage,
        "code": j.code,
        "message": j.message,
        "create_time": format_time(j.create_time),
        "end_time": format_time(j.end_time),
    }


def _deployment_data(d: Deployment) -> dict[str, Any]:
    return {
        "deployed_model": d.deployed_model,
        "model_name": d.model_name,
        "base_model": d.base_model,
        "status": d.status,
        "capacity": d.capacity,
        "workspace_id": d.workspace_id,
        "message": d.message,
    }


def _new_status(obj: Any) -> str | None:
    history = inspect(obj).attrs.status.history
    if not history.added:
        return None
    new = str(history.added[0])
    return None if history.deleted and history.deleted[0] == new else new


def _event(obj: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(obj, Job):
        status = _new_status(obj)
        kind = JOB_EVENTS.get(status or "")
        return (kind, _job_data(obj)) if kind else None
    if isinstance(obj, Deployment):
        status = _new_status(obj)
        kind = DEPLOYMENT_EVENTS.get(status or "")
        return (kind, _deployment_data(obj)) if kind else None
    return None


def _write_outbox(session: Session, _context: Any, _instances: Any) -> None:
    events = [(obj, found) for obj in list(session.dirty) if (found := _event(obj))]
    if not events:
        return
    now = utcnow()
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    with session.no_autoflush:
        for obj, (kind, data) in events:
            hooks = session.scalars(
                select(Webhook).where(Webhook.workspace_id == obj.workspace_id)
            ).all()
            for hook in hooks:
                if kind not in hook.event_types:
                    continue
                session.add(
                    WebhookDelivery(
                        id="msg_" + secrets.token_hex(12),
                        webhook_id=hook.id,
                        event_type=kind,
                        payload={"type": kind, "timestamp": stamp, "data": data},
                        status="pending",
                        attempts=[],
                        next_attempt_at=now,
                        created_at=now,
                    )
                )


def install() -> None:
    """Register the outbox writer on every session of this process (idempotent)."""
    global _installed
    if not _installed:
        event.listen(Session, "before_flush", _write_outbox)
        _installed = True


@dataclass(frozen=True)
class Due:
    """One delivery to attempt now, with what sending it needs."""

    id: str
    url: str
    secret: str
    payload: dict[str, Any]


def claim_due(rt: Runtime, limit: int = 50) -> list[Due]:
    """The oldest pending delivery of each webhook, if due; leased so that a dispatcher
    that dies mid-attempt leaves it to be claimed again. One at a time per webhook keeps
    each receiver's events in order."""
    now = utcnow()
    with rt.db.write() as s:
        pending = s.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.status == "pending")
            .order_by(WebhookDelivery.seq)
            .limit(1000)
        ).all()
        heads: dict[str, WebhookDelivery] = {}
        for row in pending:
            heads.setdefault(row.webhook_id, row)
        due = [row for row in heads.values() if row.next_attempt_at <= now][:limit]
        out = []
        for row in due:
            hook = s.get(Webhook, row.webhook_id)
            if hook is None:
                continue
            row.next_attempt_at = now + timedelta(seconds=rt.settings.webhook_lease)
            out.append(Due(row.id, hook.url, hook.secret, dict(row.payload)))
        return out


def record(rt: Runtime, delivery_id: str, status_code: int | None, error: str | None) -> None:
    """One attempt's outcome: delivered on 2xx, else retried with backoff until
    `webhook_retry_for` after the event, then failed."""
    now = utcnow()
    with rt.db.write() as s:
        row = s.scalars(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id)).first()
        if row is None or row.status != "pending":
            return
        attempts = [
            *row.attempts,
            {"at": format_time(now), "status_code": status_code, "error": error},
        ]
        row.attempts = attempts
        if status_code is not None and 200 <= status_code < 300:
            row.status = "delivered"
            return
        settings = rt.settings
        if (now - row.created_at).total_seconds() >= settings.webhook_retry_for:
            row.status = "failed"
            return
        delay = retry_delay(len(attempts), settings.webhook_backoff, settings.webhook_backoff_max)
        row.next_attempt_at = now + timedelta(seconds=delay)
