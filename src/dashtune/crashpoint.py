"""Named points where a test can SIGKILL the process (DASHTUNE_CRASH_AT): a test hook.

Chaos tests (tests/e2e/test_chaos.py) set `DASHTUNE_CRASH_AT=<point>` to kill the server
exactly between two steps of a delete or an upload, then restart it and check that the
data directory and the database agree. Unset, `reach` does nothing.
"""

from __future__ import annotations

import os
import signal

from dashtune.config import Settings

POINTS = frozenset(
    {
        "job-delete-after-rows",  # job rows committed as deleted, directories still there
        "file-delete-after-row",  # file row deleted, blob still there
        "upload-after-blob",  # blobs published, rows not inserted
        "upload-mid-request",  # first part of a multi-file upload staged, next not
        "export-after-copy",  # exported model copied into place, not yet registered
    }
)


def reach(settings: Settings, point: str) -> None:
    """SIGKILL this process if `settings.crash_at` names `point`."""
    assert point in POINTS, point
    if settings.crash_at == point:
        os.kill(os.getpid(), signal.SIGKILL)
