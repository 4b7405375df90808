"""A TCP relay to PostgreSQL that a test cuts and restores: a database outage on demand.

Cut, it closes every relayed connection and refuses new ones, as a database restart or a
network partition does to its clients; restored, it relays again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import BACKENDS, Server, start_server, stop_server


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


@contextlib.contextmanager
def relayed_server(
    data_dir: Path, database_factory: Any, **env: str
) -> Iterator[tuple[Server, CuttableRelay]]:
    """`dashtune serve` (with `env`) on a fresh PostgreSQL database reached through a relay."""
    if "postgres" not in BACKENDS:
        pytest.skip("PostgreSQL is not among DASHTUNE_TEST_BACKENDS")
    url = make_url(database_factory("postgres", data_dir))
    relay = CuttableRelay((url.host or "127.0.0.1", url.port or 5432))
    via = url.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
    srv = start_server(data_dir / "srv", via, **env)
    try:
        yield srv, relay
    finally:
        stop_server(srv)
        relay.close()
