"""Streaming a multipart upload straight into staged blobs, counted as it arrives.

python-multipart's push parser reads the body chunk by chunk; file parts are written to
`*.part` files in the blob store (inside the data directory, swept at start-up), never
to a temporary directory elsewhere. Limits are enforced while the bytes stream in, so
a chunked body (no Content-Length) is stopped at the limit like any other:

- the whole body: `DASHTUNE_MAX_UPLOAD_BYTES` plus `MULTIPART_OVERHEAD` (413);
- each file part: `DASHTUNE_MAX_UPLOAD_BYTES` (413);
- file parts per request: `DASHTUNE_MAX_UPLOAD_FILES` (400); other fields: `MAX_FIELDS`
  of at most `MAX_FIELD_BYTES` each (400).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Request
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from dashtune.api.json_body import declared_length
from dashtune.domain.errors import InvalidParameter, RequestTooLarge
from dashtune.domain.json_values import check_text
from dashtune.store.blobs import StagedBlob

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MULTIPART_OVERHEAD = 1 << 20
MAX_FIELDS = 200
MAX_FIELD_BYTES = 64 * 1024


@dataclass
class FilePart:
    """One `files` part: its name as sent, the id it is staged under, and its bytes."""

    filename: str
    file_id: str
    blob: StagedBlob
    staged: tuple[Path, int, str] | None = None  # (temp path, size, md5) once complete


@dataclass
class Upload:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: list[FilePart] = field(default_factory=list)

    def finish(self) -> None:
        """Flush every part to disk (blocking: run in the threadpool)."""
        for part in self.files:
            part.staged = part.blob.finish()

    def discard(self) -> None:
        """Remove every staged part (idempotent)."""
        for part in self.files:
            part.blob.discard()


def _text(raw: bytes, what: str) -> str:
    try:
        return check_text(raw.decode("utf-8"), what)
    except UnicodeDecodeError:
        raise InvalidParameter(f"{what} is not valid UTF-8.") from None


class _Reader:
    """The parser's callbacks: they collect fields and hand file bytes to staged blobs."""

    def __init__(self, stage: Callable[[str], FilePart], max_files: int, file_field: str) -> None:
        self.stage = stage
        self.max_files = max_files
        self.file_field = file_field
        self.upload = Upload()
        self.pending: list[tuple[StagedBlob, bytes]] = []
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._file: FilePart | None = None
        self._data = bytearray()
        self._fields = 0

    def on_part_begin(self) -> None:
        self._disposition, self._file, self._data = b"", None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > MAX_FIELD_BYTES:
            raise InvalidParameter("A multipart header is over 64 KiB.")

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise InvalidParameter('A multipart part has no Content-Disposition "name".')
        self._name = _text(options[b"name"], "A multipart part name")
        if b"filename" in options and self._name == self.file_field:
            if len(self.upload.files) >= self.max_files:
                raise InvalidParameter(
                    f"Too many files in one upload; the limit is {self.max_files} "
                    "(DASHTUNE_MAX_UPLOAD_FILES)."
                )
            self._file = self.stage(_text(options[b"filename"], "The file name"))
            self.upload.files.append(self._file)
            return
        self._fields += 1
        if self._fields > MAX_FIELDS:
            raise InvalidParameter(f"Too many form fields; the limit is {MAX_FIELDS}.")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.pending.append((self._file.blob, data[start:end]))
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise InvalidParameter(f"Form field '{self._name}' is over 64 KiB.")

    def on_part_end(self) -> None:
        if self._file is None:
            value = _text(bytes(self._data), f"Form field '{self._name}'")
            self.upload.fields.setdefault(self._name, []).append(value)

    def write_pending(self) -> None:
        """Write what the last chunk carried of file parts (run in the threadpool)."""
        for blob, chunk in self.pending:
            blob.write(chunk)
        self.pending.clear()


def _boundary(content_type: str) -> bytes:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidParameter("The multipart body has no boundary in its Content-Type.")
    return boundary


async def read_upload(
    request: Request,
    stage: Callable[[str], FilePart],
    limit: int,
    max_files: int,
    file_field: str = "files",
) -> Upload:
    """Parse the body into fields and staged file parts (the parts named `file_field` that
    carry a filename); on any error nothing is left staged."""
    body_limit = limit + MULTIPART_OVERHEAD
    length = declared_length(request)
    if length is not None and length > body_limit:
        raise RequestTooLarge(f"The upload is {length} bytes; the limit is {limit} bytes per file.")
    reader = _Reader(stage, max_files, file_field)
    callbacks: MultipartCallbacks = {
        "on_part_begin": reader.on_part_begin,
        "on_part_data": reader.on_part_data,
        "on_part_end": reader.on_part_end,
        "on_header_field": reader.on_header_field,
        "on_header_value": reader.on_header_value,
        "on_header_end": reader.on_header_end,
        "on_headers_finished": reader.on_headers_finished,
    }
    parser = MultipartParser(_boundary(request.headers.get("content-type", "")), callbacks)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > body_limit:
                raise RequestTooLarge(
                    f"The upload is over the limit of {limit} bytes per file "
                    "(DASHTUNE_MAX_UPLOAD_BYTES)."
                )
            parser.write(chunk)
            if reader.pending:
                await run_in_threadpool(reader.write_pending)
        parser.finalize()
        await run_in_threadpool(reader.upload.finish)
    except FormParserError as exc:
        reader.upload.discard()
        raise InvalidParameter(f"The multipart body is malformed: {exc}.") from None
    except BaseException:
        reader.upload.discard()
        raise
    return reader.upload
