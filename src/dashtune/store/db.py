"""Engine, sessions and schema migration for SQLite and PostgreSQL.

SQLite runs in WAL mode; write transactions start with BEGIN IMMEDIATE so two writers
serialise at BEGIN instead of failing at COMMIT. That, plus a row lock on PostgreSQL,
is what makes the quota check hold under concurrent creates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from dashtune.domain.errors import InsufficientStorage
from dashtune.domain.worker_exits import is_disk_full

T = TypeVar("T")

MIGRATIONS = Path(__file__).parent / "migrations"

# PostgreSQL ends a session left idle inside a transaction this long (ours last
# milliseconds). A worker frozen, or cut off with its node, while it held a job's row lock
# would otherwise stall every writer of that row (the scheduler first) until TCP gives up,
# hours later (tests/cluster/test_ray.py, the lost-node test, hit it).
IDLE_MS = 15_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


class Database:
    """One engine and two session factories: read (deferred) and write (serialised)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            # isolation_level=None hands transaction control to us (pysqlite's own
            # BEGIN handling would defeat BEGIN IMMEDIATE).
            self.engine: Engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "isolation_level": None, "timeout": 30},
                pool_size=8,
                max_overflow=16,
            )
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # pool_recycle instead of pool_pre_ping: a ping per checkout doubled round trips.
            self.engine = create_engine(
                url,
                pool_size=8,
                max_overflow=16,
                pool_recycle=1800,
                connect_args={"options": f"-c idle_in_transaction_session_timeout={IDLE_MS}"},
            )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries; commits nothing."""
        with self._sessions() as session:
            if self.is_sqlite:
                session.connection().exec_driver_sql("BEGIN")
            try:
                yield session
            finally:
                # Detach first: a rollback would expire what the caller goes on reading.
                session.expunge_all()
                session.rollback()

    def locked(self, session: Session, entity: type[T], key: Any) -> T | None:
        """`session.get`, the row locked for the rest of the transaction on PostgreSQL
        (SELECT ... FOR UPDATE); on SQLite a `write()` transaction (BEGIN IMMEDIATE)
        already keeps every other writer out."""
        return session.get(entity, key, with_for_update=not self.is_sqlite)

    @contextmanager
    def read_rows(self) -> Iterator[Connection]:
        """A connection for Core queries, in one read transaction (a snapshot on SQLite as
        in `read`); commits nothing. For hot read paths: no Session, no ORM objects."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._sessions() as session:
            if self.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield session
                session.commit()
            except OperationalError as exc:
                session.rollback()
                if is_disk_full(exc):
                    raise InsufficientStorage(
                        "The database's disk is full: nothing was changed. Retry once an "
                        "operator has freed space."
                    ) from exc
                raise
            except BaseException:
                session.rollback()
                raise

    def lock(self, session: Session, table: str, key_column: str, key: str) -> None:
        """Row lock for the rest of the transaction (PostgreSQL); SQLite is already serialised."""
        if not self.is_sqlite:
            session.execute(
                text(f"SELECT 1 FROM {table} WHERE {key_column} = :k FOR UPDATE"), {"k": key}
            )

    def notify(self, session: Session, channel: str) -> None:
        """`NOTIFY channel` when `session` commits (PostgreSQL; nothing on SQLite)."""
        if not self.is_sqlite:
            session.execute(text("SELECT pg_notify(:c, '')"), {"c": channel})

    def listen(self, channel: str, on_notify: Callable[[], None], stop: threading.Event) -> None:
        """Call `on_notify` for each NOTIFY on `channel` until `stop` is set (PostgreSQL:
        one connection of its own, outside the pool; reconnects after an error). On SQLite
        it returns at once: there is nothing to listen to."""
        if self.is_sqlite:
            return
        import psycopg

        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {channel}")
                    on_notify()  # what was announced while not listening is looked at now
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            on_notify()
            except psycopg.Error:
                stop.wait(1.0)

    def dispose(self) -> None:
        self.engine.dispose()


def migrate(url: str) -> None:
    """Bring the schema to the newest Alembic revision (idempotent)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    engine = create_engine(url)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    engine.dispose()
