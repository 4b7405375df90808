"""Blob store for uploaded bytes: write to a temp name, fsync, rename.

A crash mid-upload leaves at most a `*.part` file that nothing lists; `sweep()` removes
those at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NoReturn

from dashtune.domain.errors import InsufficientStorage, RequestTooLarge
from dashtune.domain.worker_exits import is_disk_full

CHUNK = 1 << 20


class BlobTooLarge(RequestTooLarge):
    pass


class StagedBlob:
    """A file being written beside its final place (`*.part`), counted and hashed as it grows."""

    def __init__(self, tmp: Path, limit: int) -> None:
        self.tmp = tmp
        self.limit = limit
        self.size = 0
        self._digest = hashlib.md5(usedforsecurity=False)
        self._out: BinaryIO | None = open(tmp, "wb")  # noqa: SIM115 (closed by finish/discard)

    def write(self, chunk: bytes) -> None:
        """Append `chunk`; past `limit` bytes the file is removed and `BlobTooLarge` raised."""
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise BlobTooLarge(f"The file is larger than the upload limit of {self.limit} bytes.")
        assert self._out is not None, "write after finish/discard"
        self._digest.update(chunk)
        try:
            self._out.write(chunk)
        except OSError as exc:
            self._failed(exc)

    def finish(self) -> tuple[Path, int, str]:
        """Flush to disk; returns (temp path, size, md5 b64) for `BlobStore.commit`."""
        assert self._out is not None, "finish after discard"
        try:
            self._out.flush()
            os.fsync(self._out.fileno())
        except OSError as exc:
            self._failed(exc)
        self._out.close()
        self._out = None
        return self.tmp, self.size, base64.b64encode(self._digest.digest()).decode()

    def _failed(self, exc: OSError) -> NoReturn:
        self.discard()
        if is_disk_full(exc):
            raise InsufficientStorage(
                "The server's disk is full: the file was not stored. Retry once an "
                "operator has freed space."
            ) from None
        raise exc

    def discard(self) -> None:
        """Remove the partial file (idempotent)."""
        if self._out is not None:
            self._out.close()
            self._out = None
        self.tmp.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def staged(self, key: str, limit: int) -> StagedBlob:
        """A temp file beside `key`'s final place, to write as bytes arrive."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        return StagedBlob(final.with_name(final.name + ".part"), limit)

    def stage(self, key: str, source: BinaryIO, limit: int) -> tuple[Path, int, str]:
        """Copy `source` to a temp file beside its final place; return (temp, size, md5 b64).

        Raises `BlobTooLarge` past `limit` bytes, with nothing left behind.
        """
        blob = self.staged(key, limit)
        try:
            while chunk := source.read(CHUNK):
                blob.write(chunk)
            return blob.finish()
        except BaseException:
            blob.discard()
            raise

    def commit(self, tmp: Path) -> Path:
        """Publish a staged file under its final name (atomic rename)."""
        final = tmp.with_name(tmp.name.removesuffix(".part"))
        os.replace(tmp, final)
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return final

    def discard(self, tmp: Path) -> None:
        tmp.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def lines(self, key: str) -> Iterator[bytes]:
        with self.open(key) as f:
            yield from f

    def sweep(self) -> int:
        """Remove temp files a crash left behind; returns how many."""
        removed = 0
        for part in self.root.glob("*/*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed
