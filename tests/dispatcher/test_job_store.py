"""The job store's schema: migrations create exactly what the models describe."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from services.store import Database, upgrade
from services.store.migrate import alembic_config, current_revision
from services.store.tables import Base


def test_migrations_match_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"write a migration for: {diff}"


def test_upgrade_is_idempotent_and_reaches_head(db: Database) -> None:
    upgrade(db.engine)
    upgrade(db.engine)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert current_revision(db.engine) == head
