"""A PostgreSQL outage while the server runs: 503s that say to retry, then convergence.

The server reaches PostgreSQL through a TCP relay that the test cuts (every relayed
connection closed, new ones refused) and restores, as a database restart or a network
partition would do to it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import BACKENDS, Server, start_server, stop_server
from tests.integration.helpers import assert_error, create_job, sft_rows, upload, write_jsonl
from tests.integration.test_fast_reads import answered


class CuttableRelay:
    """Relays TCP connections to `target` until cut; restored, it relays again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            relayed, self.open = self.open, []
        for s in relayed:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def relayed(tmp_path: Path, database_factory: Any) -> Iterator[tuple[Server, CuttableRelay]]:
    if "postgres" not in BACKENDS:
        pytest.skip("PostgreSQL is not among DASHTUNE_TEST_BACKENDS")
    url = make_url(database_factory("postgres", tmp_path))
    relay = CuttableRelay((url.host or "127.0.0.1", url.port or 5432))
    via = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    srv = start_server(tmp_path / "srv", via, DASHTUNE_EXECUTOR="none", DASHTUNE_SERVING="false")
    try:
        yield srv, relay
    finally:
        stop_server(srv)
        relay.close()


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
