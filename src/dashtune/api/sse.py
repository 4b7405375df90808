"""DashScope's server-sent event framing, for sse-starlette's EventSourceResponse.

sse-starlette writes `event: error` (a space after the colon, which SSE allows), but
both dashscope SDK generations match the line `event:error` verbatim (1.x compares the
text after `event:` with "error" unstripped; 2.x tests `startswith("event:error")`), so
an error frame would pass as data. This event writes the cloud's exact frames:

    id:1
    event:result
    :HTTP_STATUS/200
    data:{...}

with `status:<http status>` added to error frames (the 1.x SDK reads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sse_starlette.event import ServerSentEvent

from dashtune.domain.redaction import hide_paths


class DashScopeEvent(ServerSentEvent):
    def __init__(
        self, data: Any, *, event: str = "result", id: int | None = None, status: int = 200
    ) -> None:
        text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        super().__init__(text, event=event, id=None if id is None else str(id))
        self.status = status

    def encode(self) -> bytes:
        lines = []
        if self.id is not None:
            lines.append(f"id:{self.id}")
        lines.append(f"event:{self.event}")
        lines.append(f":HTTP_STATUS/{self.status}")
        if self.event == "error":
            lines.append(f"status:{self.status}")
        lines += [f"data:{chunk}" for chunk in self._LINE_SEP_EXPR.split(str(self.data))]
        return ("\n".join(lines) + "\n\n").encode("utf-8")


def error_event(
    code: str,
    message: str,
    request_id: str,
    status: int,
    id: int | None = None,
    data_dir: Path | str = "",
) -> DashScopeEvent:
    """The frame that ends a stream on an error: `{code, message, request_id}`, server
    paths (the data directory's among them) hidden."""
    body = {"code": code, "message": hide_paths(message, data_dir), "request_id": request_id}
    return DashScopeEvent(body, event="error", id=id, status=status)
