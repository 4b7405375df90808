"""The one clock: naive UTC, whole seconds (the contract's times are UTC, second precision)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def format_time(value: datetime | None) -> str | None:
    """`YYYY-MM-DD HH:MM:SS`, as the job object spells times."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else None
