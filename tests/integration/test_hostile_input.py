"""Issue 13's hostile inputs, each as the probe sent it: a clear 4xx in the envelope,
and nothing written (no row, no listed object, no blob, no temp file)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text

from dashtune.config import Settings
from dashtune.store.tables import Deployment, Job, JobLog, StoredFile
from tests.conftest import BACKENDS, BIN, Server, start_server, stop_server
from tests.integration.helpers import UUID, assert_error, sft_rows, upload, write_jsonl

KIB = 1024
MIB = 1024 * KIB
LIMITS = {
    "DASHTUNE_MAX_UPLOAD_BYTES": str(MIB),
    "DASHTUNE_MAX_UPLOAD_FILES": "4",
    "DASHTUNE_MAX_JOB_FILES": "4",
    "DASHTUNE_MAX_JOB_BYTES": str(2 * MIB),
    "DASHTUNE_MAX_BODY_BYTES": str(256 * KIB),
    "DASHTUNE_MAX_JSON_DEPTH": "32",
}
LONE = "\\ud800"  # a lone surrogate, as JSON text sends it


@pytest.fixture(scope="module", params=BACKENDS)
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, database_factory: Any
) -> Iterator[Server]:
    """A control-plane server with small limits; its TMPDIR is watched for spooled bodies."""
    data_dir = tmp_path_factory.mktemp(f"hostile-{request.param}")
    tmp = data_dir.parent / f"{data_dir.name}-tmp"
    tmp.mkdir()
    server = start_server(
        data_dir,
        database_factory(request.param, data_dir),
        DASHTUNE_EXECUTOR="none",
        DASHTUNE_SERVING="false",
        TMPDIR=str(tmp),
        **LIMITS,
    )
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def c(srv: Server) -> Iterator[httpx.Client]:
    """One user for the module: what each test must not write is checked by `written`."""
    with srv.http(srv.new_key("hostile")) as client:
        yield client


@pytest.fixture(scope="module")
def file_id(c: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("hostile-files") / "train.jsonl"
    return upload(c, write_jsonl(path, sft_rows(2)))


def written(srv: Server) -> dict[str, int]:
    """Everything a request could leave behind: rows, blobs, spooled temp files."""
    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            rows = {
                t.__name__: int(s.scalar(select(func.count()).select_from(t)) or 0)
                for t in (Job, StoredFile, Deployment, JobLog)
            }
    finally:
        rt.close()
    blobs = [p for p in (srv.data_dir / "files").rglob("*") if p.is_file()]
    rows["blobs"] = len(blobs)
    rows["parts"] = sum(1 for p in blobs if p.name.endswith(".part"))
    rows["tmp"] = sum(1 for _ in Path(srv.env["TMPDIR"]).rglob("*"))
    return rows


def wait_queued(c: httpx.Client, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while c.get(f"/fine-tunes/{job_id}").json()["output"]["status"] == "PENDING":
        assert time.monotonic() < deadline, f"{job_id} still PENDING"
        time.sleep(0.2)


def post_raw(c: httpx.Client, path: str, raw: str | bytes) -> httpx.Response:
    return c.post(path, content=raw, headers={"content-type": "application/json"})


def job_body(file_id: str, **extra: str) -> str:
    """A create body with raw JSON fragments spliced in (NaN, surrogates, huge numbers)."""
    fields = {"model": '"dashtune-tiny"', "training_file_ids": json.dumps([file_id]), **extra}
    return "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"


# Item 1 and 8: values that cannot be rendered or stored.
@pytest.mark.parametrize(
    "hyper",
    [
        '{"data_augmentation": NaN}',
        '{"freeze_vit": Infinity}',
        '{"learning_rate": -Infinity}',
        '{"target_modules": ["q_proj", "' + LONE + '"]}',
        '{"n_epochs": ' + "9" * 400 + "}",
        '{"seed": ' + "1" * 5000 + "}",
        '{"freeze_vit": ' + "[" * 40 + "]" * 40 + "}",
    ],
)
def test_unrenderable_hyper_parameters_are_400_and_store_nothing(
    srv: Server, c: httpx.Client, file_id: str, hyper: str
) -> None:
    before = written(srv)
    body = job_body(file_id, training_type='"efficient_sft"', hyper_parameters=hyper)
    assert_error(post_raw(c, "/fine-tunes", body), 400, "InvalidParameter")
    assert written(srv) == before
    assert c.get("/fine-tunes").status_code == 200


@pytest.mark.parametrize(
    "field", ["model", "job_name", "model_name", "finetuned_output_suffix", "training_type"]
)
@pytest.mark.parametrize("bad", [LONE, "a\\u0000b"])
def test_lone_surrogate_or_nul_in_any_string_field_is_400(
    srv: Server, c: httpx.Client, file_id: str, field: str, bad: str
) -> None:
    before = written(srv)
    r = post_raw(c, "/fine-tunes", job_body(file_id, **{field: f'"{bad}"'}))
    assert_error(r, 400, "InvalidParameter")
    r = post_raw(c, "/fine-tunes", job_body(file_id, training_file_ids=f'["x{bad}"]'))
    assert_error(r, 400, "InvalidParameter")
    r = post_raw(c, "/deployments", '{"model_name": "m' + bad + '", "capacity": 1}')
    assert_error(r, 400, "InvalidParameter")
    assert written(srv) == before


def test_one_bad_stored_row_does_not_break_the_job_list(srv: Server, tmp_path: Path) -> None:
    """A row an older server stored with NaN (SQLite kept it) still lists, as null."""
    if srv.database_url:
        pytest.skip("PostgreSQL's json type never stored NaN: no such row can exist")
    c = srv.http(srv.new_key("bad-row"))
    file_id = upload(c, write_jsonl(tmp_path / "t.jsonl", sft_rows(1)))
    job = c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [file_id]})
    job_id = job.json()["output"]["job_id"]
    wait_queued(c, job_id)  # its validation line must not land in a later test's snapshot
    rt = srv.runtime()
    try:
        with rt.db.write() as s:
            s.execute(
                text("UPDATE jobs SET hyper_parameters = :h WHERE id = :id"),
                {"h": '{"freeze_vit": NaN}', "id": job_id},
            )
    finally:
        rt.close()
    r = c.get("/fine-tunes")
    assert r.status_code == 200, r.text
    [listed] = r.json()["output"]["jobs"]
    assert listed["job_id"] == job_id and listed["hyper_parameters"] == {"freeze_vit": None}
    assert c.get(f"/fine-tunes/{job_id}").status_code == 200


# Item 2: chunked uploads are counted while they stream, and spool nowhere else.
def multipart(name: str, payload: bytes, boundary: str = "b0undary") -> bytes:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return head + payload + f"\r\n--{boundary}--\r\n".encode()


def test_chunked_upload_over_the_limit_is_413_and_leaves_nothing(
    srv: Server, c: httpx.Client
) -> None:
    before = written(srv)
    body = multipart("big.jsonl", (b'{"text": "' + b"x" * 1000 + b'"}\n') * 1100)

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for i in range(0, len(body), 64 * KIB):
            yield body[i : i + 64 * KIB]

    r = c.post(
        "/files",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "RequestTooLarge", "limit")
    assert written(srv) == before  # no row, no blob, no .part, nothing in TMPDIR


def test_chunked_upload_under_the_limit_is_stored(srv: Server, c: httpx.Client) -> None:
    body = multipart("ok.jsonl", b'{"text": "fine"}\n' * 100)
    r = c.post(
        "/files",
        content=iter([body[:100], body[100:]]),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["uploaded_files"][0]["name"] == "ok.jsonl"
    assert written(srv)["tmp"] == 0


@pytest.mark.parametrize(
    ("name", "payload", "words"),
    [
        ("nul\x00.jsonl", b'{"text": "x"}\n', ("nul",)),
        ("deep.jsonl", b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", ("line 1",)),
        ("int.jsonl", b'{"text": "x", "n": ' + b"7" * 5000 + b"}\n", ("line 1",)),
        ("x" * 600 + ".jsonl", b'{"text": "x"}\n', ("limit",)),
    ],
)
def test_bad_file_names_and_lines_are_400_and_leave_nothing(
    srv: Server, c: httpx.Client, name: str, payload: bytes, words: tuple[str, ...]
) -> None:
    before = written(srv)
    body = multipart(name, payload)
    r = c.post(
        "/files", content=body, headers={"content-type": "multipart/form-data; boundary=b0undary"}
    )
    assert_error(r, 400, "InvalidParameter", *words)
    assert written(srv) == before


# Item 3a: bounds on a job's data.
def test_job_file_count_duplicates_and_bytes_are_bounded(
    srv: Server, c: httpx.Client, tmp_path: Path
) -> None:
    small = upload(c, write_jsonl(tmp_path / "s.jsonl", sft_rows(1)))
    row = {"text": "y" * 900}
    big = [
        upload(c, write_jsonl(tmp_path / f"big{i}.jsonl", [row] * 1000))  # ~0.9 MiB each
        for i in range(3)
    ]
    before = written(srv)
    cases = [
        ({"training_file_ids": [small] * 1000}, "limit is 4"),
        ({"training_file_ids": [small, small]}, "more than once"),
        ({"training_file_ids": [small], "validation_file_ids": [small]}, "both"),
        ({"training_file_ids": big}, "DASHTUNE_MAX_JOB_BYTES"),
        ({"training_file_ids": [small], "validation_file_ids": big}, "DASHTUNE_MAX_JOB_BYTES"),
    ]
    for fields, words in cases:
        r = c.post("/fine-tunes", json={"model": "dashtune-tiny", **fields})
        assert_error(r, 400, "InvalidParameter", words)
    assert written(srv) == before


# Item 7: JSON bodies are bounded in bytes and depth.
def test_json_body_size_and_depth_are_limited(srv: Server, c: httpx.Client, file_id: str) -> None:
    before = written(srv)
    huge = job_body(file_id, job_name=json.dumps("x" * 300 * KIB))
    assert_error(post_raw(c, "/fine-tunes", huge), 413, "RequestTooLarge", "limit")

    def chunks() -> Iterator[bytes]:
        data = huge.encode()
        for i in range(0, len(data), 16 * KIB):
            yield data[i : i + 16 * KIB]

    r = c.post("/fine-tunes", content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "RequestTooLarge", "limit")
    deep = '{"a": ' * 1000 + "1" + "}" * 1000
    assert_error(post_raw(c, "/fine-tunes", deep), 400, "InvalidParameter", "nested")
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    assert_error(post_raw(c, "/deployments", deep[: 250 * KIB]), 400, "InvalidParameter")
    assert written(srv) == before


# Item 8: the rest of the malformed inputs that were 500s.
def test_nul_in_path_ids_and_queries_is_400(srv: Server, c: httpx.Client) -> None:
    before = written(srv)
    for path in (
        "/files/%00abc",
        "/fine-tunes/ft-%00",
        "/fine-tunes/ft-1/logs?offset=0%00",
        "/deployments/d%00/scale",
        "/models?model=%00",
        "/fine-tunes?model=a%00b",
    ):
        r = c.get(path) if "scale" not in path else c.put(path, json={"capacity": 1})
        assert_error(r, 400, "InvalidParameter", "NUL" if "?" in path else "control")
    assert written(srv) == before


def test_logs_offset_and_capacity_bounds(srv: Server, c: httpx.Client, file_id: str) -> None:
    job = c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [file_id]})
    job_id = job.json()["output"]["job_id"]
    for offset in (2**63 - 1, 2**31, 10**400):
        r = c.get(f"/fine-tunes/{job_id}/logs", params={"offset": str(offset)})
        assert_error(r, 400, "InvalidParameter", "offset")
    assert c.get(f"/fine-tunes/{job_id}/logs", params={"offset": 2**31 - 1}).status_code == 200
    wait_queued(c, job_id)  # the scheduler's validation writes a log line: let it land first
    before = written(srv)
    for cap in ("NaN", "Infinity", "-Infinity", "1e400", "9" * 400):
        r = post_raw(c, "/deployments", '{"model_name": "dashtune-tiny", "capacity": ' + cap + "}")
        assert_error(r, 400, "InvalidParameter")
    assert written(srv) == before


def test_model_name_over_the_column_is_refused_at_create_and_export(
    srv: Server, c: httpx.Client, file_id: str
) -> None:
    before = written(srv)
    r = c.post(
        "/fine-tunes",
        json={"model": "dashtune-tiny", "training_file_ids": [file_id], "model_name": "m" * 300},
    )
    assert_error(r, 400, "InvalidParameter", "model_name")
    assert written(srv) == before
    job = c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [file_id]})
    job_id = job.json()["output"]["job_id"]
    r = c.post(f"/fine-tunes/{job_id}/export/checkpoint-1", params={"model_name": "m" * 300})
    assert_error(r, 400, "InvalidParameter", "model_name")
    wait_queued(c, job_id)


def test_openai_routes_answer_openai_errors(srv: Server, c: httpx.Client) -> None:
    base = srv.base + "/compatible-mode/v1"
    cases = [
        httpx.post(base + "/chat/completions", json={}, timeout=30),  # no key: 401
        c.post(
            base + "/chat/completions",
            content=b"{nope",
            headers={"content-type": "application/json"},
        ),
        c.post(
            base + "/chat/completions",
            content=b'{"model": "x", "messages": NaN}',
            headers={"content-type": "application/json"},
        ),
        c.post(
            base + "/chat/completions",
            content=("{" * 1000).encode(),
            headers={"content-type": "application/json"},
        ),
        c.post(
            base + "/chat/completions",
            content=b"x" * 300 * KIB,
            headers={"content-type": "application/json"},
        ),
        c.get(base + "/no-such-route"),
        c.delete(base + "/models"),
        c.get(base + "/models%00"),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, r.text
        body = r.json()
        assert set(body) == {"error", "request_id"}, body
        assert set(body["error"]) == {"message", "type", "code", "param"}
        assert UUID.match(body["request_id"])


def raw_http(srv: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send bytes that no HTTP client would; return (status, headers, body)."""
    host, port = srv.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # the server closed with our unread bytes: its answer came first
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * MIB + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
    ],
    ids=["1MiB-header", "nul-in-header"],
)
def test_parser_errors_are_json(srv: Server, request_bytes: bytes) -> None:
    status, headers, body = raw_http(srv, request_bytes)
    assert status == 400
    assert headers["content-type"] == "application/json"
    err = json.loads(body)
    assert err["code"] == "InvalidParameter" and UUID.match(err["request_id"])


# Item 9: /metrics labels stay bounded whatever the requests say.
def test_metrics_labels_are_bounded(srv: Server) -> None:
    with httpx.Client(base_url=srv.base, timeout=30) as anon:
        for i in range(60):
            anon.request(f"M{i}X", f"/api/v1/files/{i}")
            anon.get(f"/nope/{i}")
        text_ = anon.get("/metrics").text
    labels: dict[str, set[str]] = {"method": set(), "route": set(), "status": set()}
    for family in text_string_to_metric_families(text_):
        if family.name == "dashtune_http_requests":
            for sample in family.samples:
                for k in labels:
                    labels[k].add(sample.labels[k])
    assert labels["method"] <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert "other" in labels["method"]
    assert not any(r.startswith("/nope") for r in labels["route"])
    assert all(s.isdigit() for s in labels["status"])


# Item 10: a new user never joins a workspace by its name.
def test_keys_create_gives_a_new_user_its_own_workspace(srv: Server, tmp_path: Path) -> None:
    team = f"team-{uuid.uuid4().hex[:6]}"
    owner = srv.new_key(f"owner-{team}", workspace=team)
    with srv.http(owner) as c:
        fid = upload(c, write_jsonl(tmp_path / "secret.jsonl", sft_rows(1)))
    ws_id = _workspace_of(srv, fid)
    for name in (team, ws_id):
        out = subprocess.run(
            [
                str(BIN / "dashtune"),
                "keys",
                "create",
                "--user",
                name,
                "--data-dir",
                str(srv.data_dir),
            ],
            env=srv.env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = out.stdout.strip()
        assert key.startswith("sk-") and "\n" not in key  # stdout: the key alone
        used = out.stderr.rsplit("(", 1)[1].split(")")[0]  # "... in workspace 'W' (ID)"
        assert used.startswith("llm-") and used != ws_id, out.stderr
        with srv.http(key) as c:
            assert_error(c.get(f"/files/{fid}"), 404, "NotFound")
            assert c.get("/files").json()["data"]["total"] == 0
    joined = srv.new_key(f"member-{team}", workspace=team)  # explicit: joins
    with srv.http(joined) as c:
        assert c.get(f"/files/{fid}").status_code == 200


def _workspace_of(srv: Server, file_id: str) -> str:
    rt = srv.runtime()
    try:
        with rt.db.read() as s:
            row = s.get(StoredFile, file_id)
            assert row is not None
            return row.workspace_id
    finally:
        rt.close()


# Item 14: a request path cannot forge access-log lines.
def test_control_characters_in_the_path_do_not_forge_log_lines(srv: Server) -> None:
    forged = "FORGED-" + uuid.uuid4().hex[:8]
    r = httpx.get(f"{srv.api}/files%0A{forged}%0D%0A{forged}", timeout=30)
    assert_error(r, 400, "InvalidParameter", "control")
    deadline = time.monotonic() + 30  # the line is written once the response has gone out
    while forged not in (log := srv.log_text()):
        assert time.monotonic() < deadline, "no access-log line for the request"
        time.sleep(0.1)
    assert not any(line.startswith(forged) for line in log.splitlines())
    assert f"\\n{forged}" in log


# Item 15: no server paths in what users read.
def test_job_logs_and_errors_hide_server_paths(srv: Server, c: httpx.Client, file_id: str) -> None:
    from dashtune.store.joblog import append_lines

    job = c.post("/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [file_id]})
    job_id = job.json()["output"]["job_id"]
    wait_queued(c, job_id)  # the scheduler's own line first, ours last
    where = srv.data_dir.resolve() / "jobs" / job_id / "train.log"
    rt = srv.runtime()
    try:
        with rt.db.write() as s:
            append_lines(s, job_id, [f"cannot open {where}: No space left on device"])
    finally:
        rt.close()
    logs = c.get(f"/fine-tunes/{job_id}/logs", params={"offset": 0}).json()["output"]["logs"]
    hidden = f"cannot open <data_dir>/jobs/{job_id}/train.log: No space left on device"
    assert logs[-1] == hidden
    assert not any(str(srv.data_dir.resolve()) in line for line in logs)
    # The OpenAI view of the same job: its events and its failure's message.
    openai = httpx.Client(
        base_url=f"{srv.base}/compatible-mode/v1/fine_tuning",
        headers={"Authorization": c.headers["Authorization"]},
        timeout=60,
    )
    with openai:
        r = openai.get(f"/jobs/{job_id}/events", params={"limit": 100})
        assert r.status_code == 200, r.text
        events = r.json()["data"]
        assert hidden in [e["message"] for e in events]
        c.post(f"/fine-tunes/{job_id}/cancel")
        rt = srv.runtime()
        try:  # a failure whose message names a file under the data directory
            from dashtune.store.tables import Job

            with rt.db.write() as s:
                row = s.get(Job, job_id)
                assert row is not None
                row.status, row.code = "FAILED", "TrainingFailed"
                row.message = f"OSError: {where} is not readable"
        finally:
            rt.close()
        error = openai.get(f"/jobs/{job_id}").json()["error"]
        assert error["message"] == f"OSError: <data_dir>/jobs/{job_id}/train.log is not readable"
        listed = openai.get("/jobs", params={"limit": 100}).json()["data"]
        assert [j["error"]["message"] for j in listed if j["id"] == job_id] == [error["message"]]


# Items 16 and 17: console headers, no CDN docs, a schema with the real bodies.
def test_console_headers_docs_and_openapi(srv: Server) -> None:
    r = httpx.get(srv.base + "/console/", timeout=30)
    assert r.status_code == 200
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(srv.base + "/docs", timeout=30).status_code == 404
    schema = httpx.get(srv.base + "/openapi.json", timeout=30).json()
    ops = [op for item in schema["paths"].values() for op in item.values()]
    assert not any("422" in op["responses"] for op in ops)
    assert all("400" in op["responses"] for op in ops)
    create = schema["paths"]["/api/v1/fine-tunes"]["post"]["requestBody"]["content"]
    assert "application/json" in create
    files = schema["paths"]["/api/v1/files"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in files


# Item 18: a database that is down is one line saying what to fix.
def test_database_down_at_start_is_one_line(tmp_path: Path) -> None:
    env = {"DASHTUNE_DATABASE_URL": "postgresql://postgres:secret@127.0.0.1:9/none"}
    out = subprocess.run(
        [str(BIN / "dashtune"), "serve", "--data-dir", str(tmp_path)],
        env={**_base_env(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "DASHTUNE_DATABASE_URL" in lines[0] and "secret" not in lines[0]


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("DASHTUNE_")}


# Item 19: revoke without the key on the command line.
def test_keys_revoke_from_stdin_or_by_id(srv: Server) -> None:
    cmd = [str(BIN / "dashtune"), "keys"]
    data = ["--data-dir", str(srv.data_dir)]
    for how in ("stdin", "id"):
        made = subprocess.run(
            [*cmd, "create", "--user", f"rev-{how}-{uuid.uuid4().hex[:6]}", *data],
            env=srv.env,
            capture_output=True,
            text=True,
            check=True,
        )
        key = made.stdout.strip()
        key_id = made.stderr.split("key id ", 1)[1].split()[0]
        assert key.startswith(key_id) and len(key_id) < len(key)
        with srv.http(key) as c:
            assert c.get("/files").status_code == 200
            args, stdin = (
                ([*cmd, "revoke", *data], key + "\n")
                if how == "stdin"
                else ([*cmd, "revoke", "--id", key_id, *data], "")
            )
            done = subprocess.run(args, env=srv.env, input=stdin, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            # Refused once DASHTUNE_AUTH_CACHE_SECONDS have passed (the server remembers a
            # key that long; tests/integration/test_key_revocation.py).
            time.sleep(Settings().auth_cache_seconds + 0.5)
            assert_error(c.get("/files"), 401, "InvalidApiKey")
    bad = subprocess.run(
        [*cmd, "revoke", "--id", "sk-zzzzzzz", *data], env=srv.env, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "nothing revoked" in bad.stderr
