"""A control-plane server for client tests (the CLI here, the console beside), and a wait."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.conftest import Server, start_server


def start_control_plane(data_dir: Path, **env: str) -> Server:
    """SQLite, no training engine (jobs stop at QUEUING), as the root conftest's `server`.
    Clients only talk HTTP, so the database behind the API does not change what they do;
    the API itself is tested on SQLite and PostgreSQL in tests/integration."""
    settings = {
        "DASHTUNE_EXECUTOR": "none",
        "DASHTUNE_HEARTBEAT_TIMEOUT": "3600",
        "DASHTUNE_MAX_UPLOAD_BYTES": str(1 << 20),
        "DASHTUNE_SERVING": "false",
    }
    return start_server(data_dir, "", **{**settings, **env})


def wait_status(server: Server, job_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    """The job once it reaches `status` (validation runs in the server's scheduler)."""
    deadline = time.monotonic() + timeout
    with server.http() as c:
        while True:
            job = c.get(f"/fine-tunes/{job_id}").json()["output"]
            if job["status"] == status:
                return dict(job)
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
