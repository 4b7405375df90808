"""A webhook receiver on loopback that verifies every delivery with `standardwebhooks`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    webhook_id: str
    payload: dict[str, Any]  # verified and parsed
    answered: int


@dataclass
class Receiver:
    url: str
    secret: str = ""
    statuses: list[int] = field(default_factory=list)  # answers to give, then 200
    hang_first: bool = False  # hold the first request until `release` is set
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    received: list[Received] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # deliveries that failed verification

    def wait(self, pred: Any, timeout: float = 60) -> list[Received]:
        deadline = time.monotonic() + timeout
        while not pred(self.received):
            assert time.monotonic() < deadline, (self.received, self.bad)
            time.sleep(0.1)
        return list(self.received)


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if state.hang_first and not state.arrived.is_set():
                state.arrived.set()
                state.release.wait(120)
                return  # the sender is gone by now: answer nothing
            try:
                payload = Webhook(state.secret).verify(body, dict(self.headers.items()))
            except Exception as exc:
                state.bad.append(f"{exc}: {body[:200]!r}")
                self.send_response(400)
                self.end_headers()
                return
            status = state.statuses.pop(0) if state.statuses else 200
            state.received.append(Received(self.headers["webhook-id"], payload, status))
            self.send_response(status)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
