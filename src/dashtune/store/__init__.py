"""Persistence: SQLAlchemy tables and queries, Alembic migrations, the blob store."""
