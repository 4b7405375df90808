"""Identifier formats: job ids as the cloud spells them, UUID file ids, API keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import datetime
from typing import Any

from dashtune.domain.errors import InvalidParameter
from dashtune.domain.json_values import check_text

JOB_ID_PATTERN = r"^ft-\d{12}-[0-9a-f]{4}$"


def new_job_id(now: datetime) -> str:
    """`ft-{yyyyMMddHHmm}-{4 hex}`; callers retry on the (rare) collision."""
    return f"ft-{now:%Y%m%d%H%M}-{secrets.token_hex(2)}"


def new_file_id() -> str:
    return str(uuid.uuid4())


def file_id_list(value: Any, name: str) -> list[str]:
    """The file ids a create body names under `name` (one id or a list; absent: none),
    stripped, or 400 InvalidParameter: create and the estimate read them alike."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidParameter(f"{name} must be an array of file ids.")
    return [check_text(v.strip(), name) for v in value]


def new_workspace_id() -> str:
    return f"llm-{secrets.token_hex(8)}"


def new_user_id() -> str:
    """A numeric string, like the cloud's account UIDs."""
    return str(secrets.randbelow(9 * 10**15) + 10**15)


def new_api_key() -> str:
    """A random key shown once: 32 bytes of entropy."""
    return "sk-" + secrets.token_hex(32)


def hash_api_key(key: str) -> str:
    """SHA-256 is enough for 256-bit random keys (no dictionary to attack) and is indexable."""
    return hashlib.sha256(key.encode()).hexdigest()


def short_id() -> str:
    return secrets.token_hex(4)
