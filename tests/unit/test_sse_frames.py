"""Error frames of our SSE streams, read by the SDKs' own parsers."""

from __future__ import annotations

import pytest
from dashscope.v2.errors import NotFoundError
from dashscope.v2.resources._sse import _iter_sse, _stream_error

from dashtune.api.sse import error_event


class _Lines:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def iter_lines(self) -> list[str]:
        return self.raw.decode().split("\n")


def test_error_frame_is_an_error_for_the_2x_client() -> None:
    frame = error_event("NotFound", "Fine-tune job 'x' not found.", "rid-1", 404).encode()
    assert b"event:error\n" in frame and b"status:404\n" in frame
    ((is_error, status, data),) = list(_iter_sse(_Lines(frame)))
    assert is_error and status == 404
    with pytest.raises(NotFoundError, match="not found"):
        raise _stream_error(status, data)


def test_error_frame_for_the_1x_sdk() -> None:
    from dashscope.client.base_api import StreamEventMixin

    frame = error_event("NotFound", "gone", "rid-2", 404).encode()
    parsed = list(StreamEventMixin._handle_stream(_Raw(frame)))  # type: ignore[arg-type]
    assert parsed == [(True, 404, '{"code": "NotFound", "message": "gone", "request_id": "rid-2"}')]


class _Raw:
    def __init__(self, raw: bytes) -> None:
        self.raw = raw

    def iter_lines(self) -> list[bytes]:
        return self.raw.split(b"\n")
