"""Schemathesis over `/openapi.json`, against the real server on SQLite and PostgreSQL:
every operation, valid and invalid inputs, bounded by `MAX_EXAMPLES` per operation and
mode. Passes when no answer is a 500 and every error is the documented envelope with a
documented status."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import Server
from tests.integration.helpers import UUID

MAX_EXAMPLES = 3


def envelope_problem(
    path: str, documented: set[str], status: int, headers: Any, raw: bytes
) -> str | None:
    """Why this answer breaks the contract, or None."""
    if status >= 500 and status not in (503, 507):
        return "a server error"
    if status < 400:
        return None
    if str(status) not in documented:
        return f"undocumented status {status}"
    ctype = (headers.get("content-type") or [""])[0]
    if not ctype.startswith("application/json"):
        return f"content-type {ctype!r}"
    try:
        body = json.loads(raw)
    except ValueError:
        return "a body that is not JSON"
    if path.startswith("/compatible-mode/"):
        ok = set(body) == {"error", "request_id"} and {"message", "type", "code"} <= set(
            body["error"]
        )
    else:
        ok = set(body) == {"request_id", "code", "message"} and isinstance(body["message"], str)
    if not ok or not UUID.match(str(body.get("request_id"))):
        return f"a body outside the envelope: {body}"
    return None


def fuzz(server: Server, key: str, op: Any, mode: GenerationMode, problems: list[str]) -> None:
    """Run `MAX_EXAMPLES` generated requests of one operation; collect what breaks the contract."""
    documented = set(op.definition.raw.get("responses", {}))
    headers = {"Authorization": f"Bearer {key}"}

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def probe(case: Any) -> None:
        response = case.call(base_url=server.base, headers=headers, timeout=30)
        status, raw = response.status_code, response.content
        problem = envelope_problem(op.path, documented, status, response.headers, raw)
        if problem:
            curl = case.as_curl_command(headers=headers)
            problems.append(f"{op.label} -> {status}: {problem}\n  {curl}")

    # Nothing to make invalid (e.g. no parameters): the positive run covered it.
    with contextlib.suppress(Unsatisfiable):
        probe()


def test_fuzzing_the_schema_finds_no_server_error(server: Server) -> None:
    key = server.new_key("fuzzer")
    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    problems: list[str] = []
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            started = time.monotonic()
            fuzz(server, key, op, mode, problems)
            print(f"{op.label} {mode.value}: {time.monotonic() - started:.1f}s")
    assert not problems, "\n".join(problems[:20])
