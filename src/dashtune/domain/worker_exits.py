"""Exit codes a worker uses when it could not record how its job ended itself.

A worker normally writes its outcome to the store and exits 0. When the store refuses
the write (a database outage, a full disk), the exit code is the only message left: the
scheduler turns it into the job's reason instead of guessing "killed or out of memory".
"""

from __future__ import annotations

import errno

# From sysexits.h: EX_TEMPFAIL and EX_IOERR-like codes, clear of Python's 1 and 2.
STORE_UNREACHABLE = 75
DISK_FULL = 74
# A worker of an attempt given up on (its node was declared lost) that found another
# attempt owns the job now: it exits, recording nothing; nobody waits for this code.
SUPERSEDED = 73

DISK_FULL_MARKERS = (
    "No space left on device",
    "database or disk is full",  # SQLite
    "could not extend file",  # PostgreSQL
    "file write failed",  # torch's PytorchStreamWriter on ENOSPC
)


def is_disk_full(exc: BaseException) -> bool:
    """True when `exc` (or what caused it) is an out-of-space error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(cur) for marker in DISK_FULL_MARKERS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def reason(returncode: int | None) -> str | None:
    """What an exit code says happened, for the codes above; None for any other."""
    if returncode == DISK_FULL:
        return "disk full: the worker could not write to the data directory or the database"
    if returncode == STORE_UNREACHABLE:
        return "the worker could not reach the database to record how the job ended"
    return None
