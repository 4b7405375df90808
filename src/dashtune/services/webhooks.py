"""Webhooks of a workspace: register, list, read, delete, and the deliveries of each.

The secret is made here (Standard Webhooks' `whsec_` + base64 form) and answered once, at
registration. URLs are checked by scheme and by every address their host resolves to.
"""

from __future__ import annotations

import base64
import secrets
import socket

from sqlalchemy import delete as sql_delete
from sqlalchemy import select

from dashtune.domain.errors import InvalidParameter, NotFound
from dashtune.domain.webhook_events import check_event_types, check_url_shape, refused_address
from dashtune.services.runtime import Runtime, utcnow
from dashtune.services.tenancy import Principal
from dashtune.store.tables import Webhook, WebhookDelivery

MAX_PER_WORKSPACE = 20
MAX_DELIVERIES_LISTED = 100


def check_url(url: object, allow_private: bool) -> str:
    """The URL, or 400 when it is not http(s) or reaches a loopback/private address."""
    host, port = check_url_shape(url)
    assert isinstance(url, str)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidParameter(f"url: host '{host}' does not resolve ({exc}).") from None
    if not allow_private:
        for info in infos:
            why = refused_address(str(info[4][0]))
            if why:
                raise InvalidParameter(
                    f"url: {host} resolves to {why}; webhooks may only call public addresses."
                )
    return url.strip()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def register(rt: Runtime, who: Principal, url: object, event_types: object) -> Webhook:
    """A new webhook; the returned row carries the secret (shown to the caller once)."""
    checked = check_url(url, rt.settings.webhook_allow_private)
    types = check_event_types(event_types)
    with rt.db.write() as s:
        count = len(
            s.scalars(select(Webhook.id).where(Webhook.workspace_id == who.workspace_id)).all()
        )
        if count >= MAX_PER_WORKSPACE:
            raise InvalidParameter(
                f"A workspace has at most {MAX_PER_WORKSPACE} webhooks; delete one first."
            )
        row = Webhook(
            id="wh-" + secrets.token_hex(8),
            workspace_id=who.workspace_id,
            url=checked,
            event_types=types,
            secret=new_secret(),
            created_at=utcnow(),
        )
        s.add(row)
    return row


def listing(rt: Runtime, who: Principal) -> list[Webhook]:
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(Webhook)
                .where(Webhook.workspace_id == who.workspace_id)
                .order_by(Webhook.created_at.desc(), Webhook.id)
            )
        )


def get(rt: Runtime, who: Principal, webhook_id: str) -> Webhook:
    with rt.db.read() as s:
        row = s.get(Webhook, webhook_id)
    if row is None or row.workspace_id != who.workspace_id:
        raise NotFound(f"Webhook '{webhook_id}' not found.")
    return row


def delete(rt: Runtime, who: Principal, webhook_id: str) -> None:
    """The webhook and its outbox rows: nothing more is sent to it."""
    with rt.db.write() as s:
        row = s.get(Webhook, webhook_id)
        if row is None or row.workspace_id != who.workspace_id:
            raise NotFound(f"Webhook '{webhook_id}' not found.")
        s.execute(sql_delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
        s.delete(row)


def deliveries(rt: Runtime, who: Principal, webhook_id: str) -> list[WebhookDelivery]:
    """The newest deliveries first, each with its attempts."""
    get(rt, who, webhook_id)
    with rt.db.read() as s:
        return list(
            s.scalars(
                select(WebhookDelivery)
                .where(WebhookDelivery.webhook_id == webhook_id)
                .order_by(WebhookDelivery.seq.desc())
                .limit(MAX_DELIVERIES_LISTED)
            )
        )
