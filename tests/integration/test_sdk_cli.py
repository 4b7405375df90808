"""The SDK's own command-line tool (`dashscope files|ft ...`) and `dashtune keys`, unchanged."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.conftest import BIN, Server
from tests.integration.helpers import sft_rows, write_jsonl


def dashscope_cli(server: Server, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DASHSCOPE_HTTP_BASE_URL=server.api, DASHSCOPE_API_KEY=key, COLUMNS="200")
    return subprocess.run(
        [str(BIN / "dashscope"), *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_sdk_cli_files_and_jobs(server: Server, tmp_path: Path) -> None:
    key = server.new_key("sdk-cli")
    path = write_jsonl(tmp_path / "cli.jsonl", sft_rows(2))
    up = dashscope_cli(server, key, "files", "upload", "-f", str(path), "-p", "fine_tune")
    assert up.returncode == 0, up.stderr
    file_id = re.search(r"file id: ([0-9a-f-]{36})", up.stdout).group(1)  # type: ignore[union-attr]
    listed = dashscope_cli(server, key, "files", "list")
    assert file_id in listed.stdout
    with server.http(key) as c:
        job_id = c.post(
            "/fine-tunes", json={"model": "dashtune-tiny", "training_file_ids": [file_id]}
        ).json()["output"]["job_id"]
    out = dashscope_cli(server, key, "ft", "list")
    assert out.returncode == 0 and job_id in out.stdout
    out = dashscope_cli(server, key, "ft", "get", job_id)
    assert out.returncode == 0 and ("PENDING" in out.stdout or "QUEUING" in out.stdout)
    out = dashscope_cli(server, key, "ft", "cancel", job_id)
    assert out.returncode == 0 and "success" in out.stdout
    out = dashscope_cli(server, key, "ft", "delete", job_id)
    assert out.returncode == 0 and "success" in out.stdout
    out = dashscope_cli(server, key, "ft", "get", job_id)
    assert out.returncode != 0 and "NotFound" in out.stdout + out.stderr


def test_keys_create_prints_the_key_alone_and_serve_prints_urls(server: Server) -> None:
    out = subprocess.run(
        [
            str(BIN / "dashtune"),
            "keys",
            "create",
            "--user",
            "printer",
            "--data-dir",
            str(server.data_dir),
        ],
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert re.fullmatch(r"sk-[0-9a-f]{64}\n", out.stdout), out.stdout
    log = server.log_text()
    assert f"DASHSCOPE_HTTP_BASE_URL={server.base}/api/v1" in log
    assert f"{server.base}/compatible-mode/v1" in log
    # The key is stored hashed: its text is nowhere in the database.
    if not server.database_url:
        db = b"".join(p.read_bytes() for p in server.data_dir.glob("dashtune.db*"))
        assert out.stdout.strip().encode() not in db
        assert server.key.encode() not in db


def test_cli_needs_user(server: Server) -> None:
    out = subprocess.run(
        [str(BIN / "dashtune"), "keys", "create"], env=server.env, capture_output=True, text=True
    )
    assert out.returncode != 0 and "--user" in out.stderr
