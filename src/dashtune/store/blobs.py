"""Blob store for uploaded bytes: write to a temp name, fsync, rename.

A crash mid-upload leaves at most a `*.part` file that nothing lists; `sweep()` removes
those at start-up.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from dashtune.domain.errors import RequestTooLarge

CHUNK = 1 << 20


class BlobTooLarge(RequestTooLarge):
    pass


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def stage(self, key: str, source: BinaryIO, limit: int) -> tuple[Path, int, str]:
        """Copy `source` to a temp file beside its final place; return (temp, size, md5 b64).

        Raises `BlobTooLarge` past `limit` bytes, with nothing left behind.
        """
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(final.name + ".part")
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        try:
            with open(tmp, "wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise BlobTooLarge(
                            f"The file is larger than the upload limit of {limit} bytes."
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, size, base64.b64encode(digest.digest()).decode()

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


def remove_tree(path: Path) -> None:
    """Delete a directory of artifacts; missing is fine."""
    shutil.rmtree(path, ignore_errors=True)
