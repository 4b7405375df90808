"""A PostgreSQL outage while the server runs: 503s that say to retry, then convergence.

The server reaches PostgreSQL through `tests.relay.CuttableRelay`, which the test cuts
and restores, as a database restart or a network partition would do to it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.integration.helpers import assert_error, create_job, sft_rows, upload, write_jsonl
from tests.integration.test_fast_reads import answered
from tests.relay import CuttableRelay, relayed_server


@pytest.fixture
def relayed(tmp_path: Path, database_factory: Any) -> Iterator[tuple[Server, CuttableRelay]]:
    with relayed_server(
        tmp_path, database_factory, DASHTUNE_EXECUTOR="none", DASHTUNE_SERVING="false"
    ) as pair:
        yield pair


def until_ok(c: httpx.Client, path: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while (r := c.get(path)).status_code != 200:
        assert time.monotonic() < deadline, f"{path} still {r.status_code}: {r.text}"
        time.sleep(0.2)
    return r


def test_an_outage_gives_retryable_503s_and_converges(
    relayed: tuple[Server, CuttableRelay], tmp_path: Path
) -> None:
    srv, relay = relayed
    with srv.http() as c:
        fid = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
        job_id = create_job(c, fid)["job_id"]
        path = f"/fine-tunes/{job_id}"
        until_ok(c, path)
        relay.cut()
        # Each read, the hot ones included, and a write: a 503 saying to retry, no 500.
        for r in (
            c.get(path),
            c.get("/fine-tunes"),
            c.get("/fine-tunes?page_no=2"),
            c.get(f"{path}/logs"),
            c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [fid]}),
        ):
            assert_error(r, 503, "ServiceUnavailable", "database", "retry")
        assert httpx.get(srv.base + "/health", timeout=30).status_code == 200
        relay.restore()
        assert until_ok(c, path).json()["output"]["job_id"] == job_id
        before = answered(srv)
        assert c.get(path).status_code == 200
        assert answered(srv) == before + 1  # the fast path serves again
        # The scheduler lived through it: a job created now is validated as usual.
        new = create_job(c, fid)["job_id"]
        deadline = time.monotonic() + 60
        while c.get(f"/fine-tunes/{new}").json()["output"]["status"] == "PENDING":
            assert time.monotonic() < deadline, "a job created after the outage stays PENDING"
            time.sleep(0.2)
        assert c.get(f"/fine-tunes/{new}").json()["output"]["status"] == "QUEUING"
        listed = c.get("/fine-tunes").json()["output"]
        assert listed["total"] == 2 and {j["job_id"] for j in listed["jobs"]} == {job_id, new}
