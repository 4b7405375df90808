"""A revoked key is refused by every server on the database within DASHTUNE_AUTH_CACHE_SECONDS.

Each server remembers a key's principal for that long (services/principal_cache.py);
two server processes share one database here, both have the key cached and in use when
`dashtune keys revoke` runs, and both must refuse it once the bound has passed, even
while it is polled the whole time (a hit must not extend the entry's life).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, BIN, Server, start_server, stop_server
from tests.integration.helpers import assert_error

BOUND = 1.5  # DASHTUNE_AUTH_CACHE_SECONDS of both servers


@pytest.mark.parametrize("backend", BACKENDS)
def test_revoked_key_is_refused_by_every_replica_within_the_bound(
    backend: str, tmp_path: Path, database_factory
) -> None:  # type: ignore[no-untyped-def]
    url = database_factory(backend, tmp_path)
    common = {
        "DASHTUNE_EXECUTOR": "none",
        "DASHTUNE_SERVING": "false",
        "DASHTUNE_AUTH_CACHE_SECONDS": str(BOUND),
    }
    a = start_server(tmp_path / "data", url, log_name="a.log", **common)
    servers: list[Server] = [a]
    try:
        # A second API replica on the same database (and data directory), no scheduler.
        b = start_server(
            tmp_path / "data", url, log_name="b.log", DASHTUNE_SCHEDULER="false", **common
        )
        servers.append(b)
        key = a.new_key("revokee")
        clients = [s.http(key) for s in servers]
        for c in clients:
            assert c.get("/files").status_code == 200  # now cached on both
        subprocess.run(
            [str(BIN / "dashtune"), "keys", "revoke", "--data-dir", str(a.data_dir)],
            input=key,
            text=True,
            env=a.env,
            check=True,
            capture_output=True,
        )
        # Keep using the key on both replicas until the bound has passed since the revoke.
        end = time.monotonic() + BOUND
        while time.monotonic() < end:
            for c in clients:
                assert c.get("/files").status_code in (200, 401)
            time.sleep(0.05)
        for c in clients:
            assert_error(c.get("/files"), 401, "InvalidApiKey")
            c.close()
        # Other keys are unaffected, and a new key works at once (misses are not cached).
        fresh = b.new_key("newcomer")
        for s in servers:
            with s.http(fresh) as c:
                assert c.get("/files").status_code == 200
    finally:
        for s in servers:
            stop_server(s)
