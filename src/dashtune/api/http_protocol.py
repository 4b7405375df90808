"""uvicorn's h11 protocol, with the parser's own 400s in the DashScope envelope.

What h11 refuses before the app sees a request (a header over
`h11_max_incomplete_event_size`, a NUL in a header, a malformed request line) gets
uvicorn's plain-text "Invalid HTTP request received."; this class renders it as JSON.
What it cannot change: the status (400, never 431/413), and a peer that closes or
sends garbage before a request line gets no response at all.
"""

from __future__ import annotations

import json
import uuid

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# uvicorn's default; headers past it are refused (and a 1 MiB header never buffers whole).
MAX_HEADER_BYTES = 16 * 1024


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        rid = str(uuid.uuid4())
        message = (
            f"{msg.rstrip('.')}: a malformed request line or header, or headers over "
            f"{MAX_HEADER_BYTES} bytes."
        )
        body = json.dumps({"request_id": rid, "code": "InvalidParameter", "message": message})
        headers = [
            (b"content-type", b"application/json"),
            (b"x-request-id", rid.encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body.encode()),
            h11.EndOfMessage(),
        ):
            self.transport.write(self.conn.send(event) or b"")
        self.transport.close()
