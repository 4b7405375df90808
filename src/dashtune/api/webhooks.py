"""Webhook routes (extension): register, list, read, delete, deliveries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from dashtune.api.auth import Caller, RuntimeDep
from dashtune.api.envelope import json_body, ok
from dashtune.domain.clock import format_time
from dashtune.domain.webhook_events import public_payload
from dashtune.services import webhooks
from dashtune.store.tables import Webhook, WebhookDelivery

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])


def webhook_view(w: Webhook) -> dict[str, Any]:
    return {
        "webhook_id": w.id,
        "url": w.url,
        "event_types": w.event_types,
        "create_time": format_time(w.created_at),
    }


def delivery_view(d: WebhookDelivery, data_dir: Path) -> dict[str, Any]:
    return {
        "webhook_message_id": d.id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "create_time": format_time(d.created_at),
        "next_attempt_time": format_time(d.next_attempt_at) if d.status == "pending" else None,
        "payload": public_payload(d.payload, data_dir),
    }


@router.post("")
async def register(request: Request, who: Caller, rt: RuntimeDep) -> JSONResponse:
    """The secret is in this answer only."""
    body = await json_body(request)
    row = await run_in_threadpool(
        webhooks.register, rt, who, body.get("url"), body.get("event_types")
    )
    return ok({**webhook_view(row), "secret": row.secret})


@router.get("")
def listing(who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok({"webhooks": [webhook_view(w) for w in webhooks.listing(rt, who)]})


@router.get("/{webhook_id}")
def get(webhook_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    return ok(webhook_view(webhooks.get(rt, who, webhook_id)))


@router.delete("/{webhook_id}")
def delete(webhook_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    webhooks.delete(rt, who, webhook_id)
    return ok({"status": "success"})


@router.get("/{webhook_id}/deliveries")
def deliveries(webhook_id: str, who: Caller, rt: RuntimeDep) -> JSONResponse:
    rows = webhooks.deliveries(rt, who, webhook_id)
    return ok({"deliveries": [delivery_view(d, rt.settings.data_dir) for d in rows]})
