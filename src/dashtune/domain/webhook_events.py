"""Webhook rules with no I/O: the event types, which state change is which event, which
addresses a webhook may point at, when a failed delivery is tried again, and what of an
event its receiver may see."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.redaction import hide_paths

# New job / deployment status -> the event that reports it.
JOB_EVENTS = {
    "RUNNING": "fine_tune.running",
    "SUCCEEDED": "fine_tune.succeeded",
    "FAILED": "fine_tune.failed",
    "CANCELED": "fine_tune.canceled",
    "PAUSED": "fine_tune.paused",
}
DEPLOYMENT_EVENTS = {"RUNNING": "deployment.running", "FAILED": "deployment.failed"}
EVENT_TYPES = tuple(JOB_EVENTS.values()) + tuple(DEPLOYMENT_EVENTS.values())


def check_event_types(value: object) -> list[str]:
    """A non-empty list of known event types (duplicates dropped, order kept)."""
    if value is None:
        return list(EVENT_TYPES)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidParameter("event_types must be a non-empty array of event type names.")
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise InvalidParameter(
            f"event_types: unknown {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}."
        )
    return list(dict.fromkeys(value))


def check_url_shape(url: object) -> tuple[str, int]:
    """(host, port) of an http(s) URL with a host, else 400."""
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidParameter("url must be an http:// or https:// URL of at most 2000 characters.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise InvalidParameter(f"url is not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidParameter("url must be an http:// or https:// URL with a host.")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def refused_address(address: str) -> str | None:
    """Why a webhook may not call this IP (loopback, private, ...), or None when it may."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
    ):
        if flag:
            return f"{address} is a {kind} address"
    return None


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds before attempt `attempt + 1`: exponential from `base`, at most `cap`.

    The schedule is kept in the outbox row (next_attempt_at), not in a sleeping loop, so
    that it survives a restart; hence no in-process retry library here."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def public_payload(payload: dict[str, Any], data_dir: Path | str) -> dict[str, Any]:
    """The event as its receiver may see it: no server path in the job's or deployment's
    message, as the API's views show it. The outbox keeps the message as written (its
    writer, any process, does not know the data dir), so this runs on the way out."""
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        return payload
    return {**payload, "data": {**data, "message": hide_paths(data["message"], data_dir)}}
