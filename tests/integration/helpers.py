"""Small helpers shared by the integration tests."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")


def sft_rows(n: int = 4) -> list[dict[str, Any]]:
    return [
        {
            "messages": [
                {"role": "system", "content": "You reverse words."},
                {"role": "user", "content": f"reverse w{i}ord"},
                {"role": "assistant", "content": f"dro{i}w"},
            ]
        }
        for i in range(n)
    ]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def upload(client: httpx.Client, path: Path) -> str:
    r = client.post("/files", files={"files": (path.name, path.read_bytes())})
    assert r.status_code == 200, r.text
    return str(r.json()["data"]["uploaded_files"][0]["file_id"])


def assert_error(r: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    """The DashScope error envelope with the right status, code, a message and a request id."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["code"] == code, body
    assert UUID.match(body["request_id"]), body
    assert r.headers["x-request-id"] == body["request_id"]
    assert isinstance(body["message"], str) and body["message"]
    for w in words:
        assert w.lower() in body["message"].lower(), body["message"]
    return dict(body)


def create_job(client: httpx.Client, file_id: str, **extra: Any) -> dict[str, Any]:
    body = {"model": "dashtune-tiny", "training_file_ids": [file_id], **extra}
    r = client.post("/fine-tunes", json=body)
    assert r.status_code == 200, r.text
    return dict(r.json()["output"])


def wait_status(c: httpx.Client, job_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    """Poll the job until it reaches ``status``; fail naming the state it is stuck in."""
    deadline = time.monotonic() + timeout
    while True:
        job = dict(c.get(f"/fine-tunes/{job_id}").json()["output"])
        if job["status"] == status:
            return job
        assert time.monotonic() < deadline, f"{job_id} stuck in {job['status']}, wanted {status}"
        time.sleep(0.1)
