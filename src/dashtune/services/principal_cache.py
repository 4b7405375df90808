"""A short-lived, per-process memory of who an API key is, so that a poll costs no query.

Every request used to look its key up (a join of api_keys and users, plus memberships
when a workspace header is sent). Here the answer is kept for `ttl` seconds, keyed by the
key's SHA-256 (the same digest the database stores: the raw key is never kept) and the
workspace header. Only successes are kept: an unknown or refused key is looked up again
every time, so a key just created works at once.

The bound this gives revocation: a key revoked at time T (by `dashtune keys revoke` or any
other process on the same database) is refused by every server process from T + ttl on,
because no entry outlives `ttl` seconds after it was read from the database. `ttl=0`
turns the cache off (every request reads the database, as before).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from dashtune.services.tenancy import Principal

MAX_ENTRIES = 10_000


class PrincipalCache:
    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key_hash: str, workspace: str | None) -> Principal | None:
        """The principal read less than `ttl` seconds ago, or None."""
        if self.ttl <= 0:
            return None
        k = (key_hash, workspace or "")
        with self._lock:
            hit = self._entries.get(k)
            if hit is None:
                return None
            if time.monotonic() >= hit[0]:
                del self._entries[k]
                return None
            return hit[1]

    def put(self, key_hash: str, workspace: str | None, who: Principal, read_at: float) -> None:
        """Keep `who` until `read_at + ttl` (`read_at`: monotonic time before the query ran,
        so the bound counts from before the database answered, not after)."""
        if self.ttl <= 0:
            return
        with self._lock:
            self._entries[(key_hash, workspace or "")] = (read_at + self.ttl, who)
            self._entries.move_to_end((key_hash, workspace or ""))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
