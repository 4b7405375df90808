"""`GET /metrics` (Prometheus) and the JSON access log, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dashtune.services import engine
from tests.conftest import Server, start_server, stop_server
from tests.integration.helpers import create_job, sft_rows, upload, wait_status, write_jsonl


def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(server.base + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_requests_and_job_states_move(server: Server, tmp_path: Path) -> None:
    route = "/api/v1/fine-tunes/{job_id}"
    with server.http() as c:
        file_id = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
        before = scrape(server)
        job_id = create_job(c, file_id)["job_id"]
        wait_status(c, job_id, "QUEUING", timeout=30)
        queued = scrape(server)
        c.get("/fine-tunes/ft-missing")
        c.post(f"/fine-tunes/{job_id}/cancel")
        httpx.get(server.base + "/console/static/console.css")
        httpx.get(server.base + "/no/such/page")
        after = scrape(server)

    # Requests are counted by route template and status, never by raw path.
    assert value(
        after, "dashtune_http_requests_total", method="GET", route=route, status="404"
    ) == (
        value(queued, "dashtune_http_requests_total", method="GET", route=route, status="404") + 1
    )
    assert (
        value(
            after,
            "dashtune_http_requests_total",
            method="POST",
            route="/api/v1/fine-tunes",
            status="200",
        )
        >= 1
    )
    assert not any("ft-missing" in str(labels) for _, labels in after)
    assert (
        value(
            after,
            "dashtune_http_requests_total",
            method="GET",
            route="/console/static/{path}",
            status="200",
        )
        >= 1
    )
    assert (
        value(
            after, "dashtune_http_requests_total", method="GET", route="<unmatched>", status="404"
        )
        >= 1
    )
    assert (
        value(
            after,
            "dashtune_http_request_duration_seconds_count",
            method="POST",
            route=route + "/cancel",
        )
        >= 1
    )

    # Job gauges are read from the database at scrape time.
    assert (
        value(queued, "dashtune_jobs", state="QUEUING")
        == value(before, "dashtune_jobs", state="QUEUING") + 1
    )
    assert value(queued, "dashtune_queue_depth") == value(before, "dashtune_queue_depth") + 1
    assert value(after, "dashtune_jobs", state="QUEUING") == value(
        before, "dashtune_jobs", state="QUEUING"
    )
    assert (
        value(after, "dashtune_jobs", state="CANCELED")
        == value(before, "dashtune_jobs", state="CANCELED") + 1
    )


def test_ended_jobs_feed_duration_and_tokens_once(server: Server, tmp_path: Path) -> None:
    rt = server.runtime()
    try:
        with server.http() as c:
            file_id = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
            before = scrape(server)
            job_id = create_job(c, file_id, training_type="efficient_sft")["job_id"]
            wait_status(c, job_id, "QUEUING", timeout=30)
            assert engine.claim_next(rt, "metrics-test") is not None
            c.post(f"/fine-tunes/{job_id}/cancel")
        engine.finish(rt, job_id, engine.Outcome(canceled=True, usage=1234))
        after = scrape(server)
        again = scrape(server)
    finally:
        rt.close()

    labels = {"state": "CANCELED", "training_type": "efficient_sft"}
    count = "dashtune_job_duration_seconds_count"
    assert value(after, count, **labels) == value(before, count, **labels) + 1
    tokens = "dashtune_training_tokens_total"
    assert value(after, tokens, training_type="efficient_sft") == (
        value(before, tokens, training_type="efficient_sft") + 1234
    )
    # Observed once: a second scrape does not count the same job again.
    assert value(again, count, **labels) == value(after, count, **labels)
    assert value(again, tokens, training_type="efficient_sft") == value(
        after, tokens, training_type="efficient_sft"
    )


def test_json_logs_have_one_line_per_request_with_its_request_id(tmp_path: Path) -> None:
    srv = start_server(tmp_path / "data", "", DASHTUNE_EXECUTOR="none", DASHTUNE_LOG_JSON="true")
    try:
        with srv.http() as c:
            r = c.get("/fine-tunes/ft-nope")
        request_id = r.headers["x-request-id"]
        deadline = time.monotonic() + 10
        while request_id not in srv.log_text():
            assert time.monotonic() < deadline, srv.log_text()
            time.sleep(0.1)
    finally:
        stop_server(srv)

    records = []
    for line in srv.log_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        else:  # only the startup banner (the first key and the base URLs) is plain text
            assert line.startswith(
                (
                    "Created user",
                    "  DASHSCOPE_API_KEY=",
                    "DashScope SDK",
                    "OpenAI SDK",
                    "Web console",
                )
            ), line
    access = [r for r in records if r.get("request_id") == request_id]
    assert len(access) == 1, access
    line = access[0]
    assert line["logger"] == "dashtune.access" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["route"] == "/api/v1/fine-tunes/{job_id}"
    assert line["path"] == "/api/v1/fine-tunes/ft-nope" and line["status"] == 404
    assert isinstance(line["duration_ms"], float) and line["time"]
    assert any(r["logger"].startswith("alembic") for r in records)  # other loggers are JSON too
