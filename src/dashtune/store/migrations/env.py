"""Alembic environment: runs on the connection `store.db.migrate` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from dashtune.store.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # `alembic` command line: open our own
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    connection = engine.connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
