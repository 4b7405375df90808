"""Engine, sessions and schema migration for SQLite and PostgreSQL.

SQLite runs in WAL mode; write transactions start with BEGIN IMMEDIATE so two writers
serialise at BEGIN instead of failing at COMMIT. That, plus a row lock on PostgreSQL,
is what makes the quota check hold under concurrent creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


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
            self.engine = create_engine(url, pool_size=8, max_overflow=16, pool_recycle=1800)
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

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction that commits on success and rolls back on any error."""
        with self._sessions() as session:
            if self.is_sqlite:
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def lock(self, session: Session, table: str, key_column: str, key: str) -> None:
        """Row lock for the rest of the transaction (PostgreSQL); SQLite is already serialised."""
        if not self.is_sqlite:
            session.execute(
                text(f"SELECT 1 FROM {table} WHERE {key_column} = :k FOR UPDATE"), {"k": key}
            )

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
