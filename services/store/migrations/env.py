"""Alembic environment: always driven programmatically with a connection (see migrate.py)."""

from __future__ import annotations

from alembic import context

from services.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through services.store.migrate.upgrade() or `trainforge db upgrade`"
    )
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
