"""The fast path of the two hot job reads (api/fast_reads.py) answers as the routes do.

Each hot request is compared with its *twin*: the same request with one extra query
parameter (`via=route`), which the fast path never takes and the FastAPI route ignores.
`/metrics` tells which path answered (`dashtune_fast_reads_total{outcome}`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from dashtune.store.driver_reads import APPLICATION_NAME
from tests.conftest import Server
from tests.integration.helpers import UUID, assert_error, create_job, sft_rows, upload, write_jsonl


def metric(srv: Server, name: str, labels: str = "") -> float:
    text = httpx.get(srv.base + "/metrics", timeout=30).text
    m = re.search(rf"^{name}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def answered(srv: Server) -> float:
    return metric(srv, "dashtune_fast_reads_total", '{outcome="answered"}')


def passed(srv: Server) -> float:
    return metric(srv, "dashtune_fast_reads_total", '{outcome="passed"}')


def renders(srv: Server) -> float:
    return metric(srv, "dashtune_fast_read_job_renders_total")


def settled(c: httpx.Client, job_id: str, timeout: float = 60) -> str:
    """Wait until validation has judged the job (no change under the comparisons)."""
    deadline = time.monotonic() + timeout
    while (status := c.get(f"/fine-tunes/{job_id}").json()["output"]["status"]) == "PENDING":
        assert time.monotonic() < deadline, f"{job_id} still PENDING"
        time.sleep(0.1)
    return str(status)


def twin(path: str) -> str:
    return path + ("&" if "?" in path else "?") + "via=route"


def same_answer(c: httpx.Client, path: str) -> dict[str, object]:
    """GET `path` and its twin: both 200, the same bytes but for the request id."""
    hot, route = c.get(path), c.get(twin(path))
    bodies = []
    for r in (hot, route):
        assert r.status_code == 200, (path, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.headers["x-content-type-options"] == "nosniff"
        rid = r.json()["request_id"]
        assert UUID.match(rid) and r.headers["x-request-id"] == rid
        assert int(r.headers["content-length"]) == len(r.content)
        bodies.append(r.content.replace(rid.encode(), b"<id>"))
    assert bodies[0] == bodies[1], path
    assert sorted(hot.headers.keys()) == sorted(route.headers.keys())
    return dict(hot.json()["output"])


def test_the_fast_path_answers_the_routes_bytes(server: Server, tmp_path: Path) -> None:
    with server.http(server.new_key("fast-lister")) as c:
        fid = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
        tiny = [create_job(c, fid)["job_id"] for _ in range(3)]
        qwen = create_job(c, fid, model="qwen2.5-0.5b-instruct", job_name="ünïcode ✓")["job_id"]
        statuses = {settled(c, j) for j in [*tiny, qwen]}
        paths = [f"/fine-tunes/{j}" for j in [*tiny, qwen]] + [
            "/fine-tunes",
            "/fine-tunes?page_no=2&page_size=2",
            "/fine-tunes?page_size=100",
            "/fine-tunes?model=qwen2.5-0.5b-instruct",
            "/fine-tunes?model=dashtune-tiny&page_no=2&page_size=2",
            "/fine-tunes?model=no-such-model",
            "/fine-tunes?page_no=99",
            "/fine-tunes?model=",
        ]
        before = answered(server)
        outputs = {p: same_answer(c, p) for p in paths}
        # Every hot request was the fast path's (the twins never are).
        assert answered(server) - before == len(paths)
    assert "QUEUING" in statuses
    assert outputs[f"/fine-tunes/{qwen}"]["job_name"] == "ünïcode ✓"
    assert [j["job_id"] for j in outputs["/fine-tunes"]["jobs"]] == [qwen, *reversed(tiny)]
    page2 = outputs["/fine-tunes?page_no=2&page_size=2"]
    assert (page2["total"], page2["page_no"], page2["page_size"]) == (4, 2, 2)
    assert [j["job_id"] for j in page2["jobs"]] == [tiny[1], tiny[0]]
    filtered = outputs["/fine-tunes?model=dashtune-tiny&page_no=2&page_size=2"]
    assert [j["job_id"] for j in filtered["jobs"]] == [tiny[0]] and filtered["total"] == 3
    assert outputs["/fine-tunes?model=no-such-model"] == {
        "jobs": [],
        "total": 0,
        "page_no": 1,
        "page_size": 10,
    }
    assert outputs["/fine-tunes?page_no=99"]["jobs"] == []
    assert outputs["/fine-tunes?page_no=99"]["total"] == 4
    assert outputs["/fine-tunes?model="]["total"] == 4


def test_a_changed_job_is_rendered_again(server: Server, tmp_path: Path) -> None:
    with server.http(server.new_key("fast-changer")) as c:
        fid = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
        job_id = create_job(c, fid)["job_id"]
        assert settled(c, job_id) == "QUEUING"
        path = f"/fine-tunes/{job_id}"
        same_answer(c, path)
        kept = renders(server)
        for _ in range(3):
            assert c.get(path).status_code == 200
        assert renders(server) == kept  # unchanged: the kept rendering, not a new one
        assert c.post(f"{path}/cancel").status_code == 200
        assert same_answer(c, path)["status"] == "CANCELED"
        assert renders(server) == kept + 1
        listed = same_answer(c, "/fine-tunes")
        assert [j["status"] for j in listed["jobs"]] == ["CANCELED"]
        assert c.delete(path).status_code == 200
        assert_error(c.get(path), 404, "NotFound", job_id)
        assert same_answer(c, "/fine-tunes")["jobs"] == []


def test_what_the_fast_path_does_not_answer_the_routes_do(server: Server, tmp_path: Path) -> None:
    key = server.new_key("fast-errors")
    with server.http(key) as c, server.http(server.new_key("fast-other")) as other:
        before = passed(server)
        # A key no request has used yet: the route looks it up (and caches it).
        assert c.get("/fine-tunes").status_code == 200
        assert passed(server) == before + 1
        fid = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
        job_id = create_job(c, fid)["job_id"]
        assert other.get("/fine-tunes").status_code == 200
        before = passed(server)
        assert_error(c.get("/fine-tunes/ft-202601010000-0000"), 404, "NotFound")
        assert_error(other.get(f"/fine-tunes/{job_id}"), 404, "NotFound")  # not 403
        assert passed(server) == before + 2
        assert other.get("/fine-tunes").json()["output"]["total"] == 0
        for bad in ("page_size=101", "page_size=0", "page_no=0", "page_no=x", "page_no=1e3"):
            assert_error(c.get(f"/fine-tunes?{bad}"), 400, "InvalidParameter")
        assert_error(c.get("/fine-tunes?model=a%00b"), 400, "InvalidParameter")
    with server.http("sk-not-a-key") as stranger:
        assert_error(stranger.get(f"/fine-tunes/{job_id}"), 401, "InvalidApiKey")
    assert httpx.get(f"{server.api}/fine-tunes/{job_id}", timeout=30).status_code == 401


def test_a_broken_database_connection_costs_one_fallback(server: Server, tmp_path: Path) -> None:
    """PostgreSQL: the fast path's own connections are killed; the next read is answered
    by the route, and the one after by the fast path again, on a new connection."""
    if not server.database_url:
        pytest.skip("SQLite reads have no connection of their own to lose")
    with server.http(server.new_key("fast-pg")) as c:
        fid = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(2)))
        path = f"/fine-tunes/{create_job(c, fid)['job_id']}"
        assert c.get(path).status_code == 200
        url = server.database_url.replace("+psycopg", "")
        with psycopg.connect(url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (APPLICATION_NAME,),
            ).fetchone()
        assert killed and killed[0] >= 1
        before_answered, before_passed = answered(server), passed(server)
        # Each killed connection fails one request over to the route, then a new one serves.
        for _ in range(killed[0]):
            assert same_answer(c, path)["job_id"] == path.rsplit("/", 1)[1]
        assert passed(server) - before_passed == killed[0]
        assert answered(server) == before_answered
        assert c.get(path).status_code == 200
        assert answered(server) - before_answered == 1
