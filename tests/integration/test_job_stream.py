"""The job stream starts at the end of the log; history only on request (Last-Event-ID
or ?offset=), and every log event carries its line number as the SSE id."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from dashtune.services import engine
from dashtune.services.runtime import Runtime
from tests.conftest import Server
from tests.integration.helpers import create_job, sft_rows, upload, write_jsonl
from tests.integration.test_job_states import to_running


@pytest.fixture
def rt(server: Server) -> Iterator[Runtime]:
    runtime = server.runtime()
    yield runtime
    runtime.close()


def log_events(
    c: httpx.Client, job_id: str, out: list[tuple[int, str]] | None = None, **kwargs: object
) -> list[tuple[int, str]]:
    """(id, line) of every log event until the stream ends, appended to `out` as they come."""
    out = [] if out is None else out
    with connect_sse(c, "GET", f"/fine-tunes/{job_id}/stream", **kwargs) as source:  # type: ignore[arg-type]
        for sse in source.iter_sse():
            payload = json.loads(sse.data) if sse.data else {}
            if payload.get("type") == "log":
                out.append((int(sse.id), payload["line"]))
    return out


def test_streams_start_from_the_end_unless_asked_for_history(
    server: Server,
    rt: Runtime,
    tmp_path: Path,
) -> None:
    key = server.new_key("streamer")
    with server.http(key) as c:
        job_id = create_job(c, upload(c, write_jsonl(tmp_path / "s.jsonl", sft_rows(2))))["job_id"]
        to_running(c, rt, job_id)
        engine.log(rt, job_id, [f"step {i}" for i in range(1, 1001)])
        total = c.get(f"/fine-tunes/{job_id}/logs").json()["output"]["total"]
        # A live stream: the last 10 lines (DASHTUNE_STREAM_TAIL_LINES), then what comes
        # next, then the end.
        got: list[tuple[int, str]] = []
        reader = threading.Thread(target=log_events, args=(c, job_id, got))
        reader.start()
        deadline = time.monotonic() + 30
        while len(got) < 10:
            assert time.monotonic() < deadline, got
            time.sleep(0.05)
        engine.log(rt, job_id, ["after the stream opened"])
        engine.finish(rt, job_id, engine.Outcome(usage=1, final_path="/tmp/x"))
        reader.join(timeout=60)
        assert not reader.is_alive()
        ids = [i for i, _ in got]
        assert ids[:10] == list(range(total - 9, total + 1))
        assert (total + 1, "after the stream opened") in got
        assert ids == sorted(set(ids))  # no line twice
        end = ids[-1]
        # History on request: after a given line, by header or by query.
        resumed = log_events(c, job_id, headers={"Last-Event-ID": str(end - 5)})
        assert [i for i, _ in resumed] == list(range(end - 4, end + 1))
        full = log_events(c, job_id, params={"offset": 0})
        assert [i for i, _ in full] == list(range(1, end + 1))
        assert full[-1] == got[-1]
