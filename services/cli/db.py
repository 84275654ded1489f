"""``trainforge db …``: migrate the job store."""

from __future__ import annotations

import typer

app = typer.Typer(help="Job-store migrations (TRAINFORGE_DATABASE_URL).", no_args_is_help=True)


@app.command()
def upgrade(revision: str = typer.Argument("head", help="Alembic revision")) -> None:
    """Apply migrations up to REVISION (safe to run from several replicas at once)."""
    from services.store import Database
    from services.store import upgrade as run_upgrade
    from services.store.migrate import current_revision
    from services.store.settings import DatabaseSettings

    db = Database(DatabaseSettings().resolved_database_url, pool_size=1)
    try:
        run_upgrade(db.engine, revision)
        print(f"job store at revision {current_revision(db.engine)}")
    finally:
        db.dispose()
