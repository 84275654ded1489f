"""``trainforge tokens …``: create, list and revoke team API tokens (talks to the database)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from services.store import Database

app = typer.Typer(help="Manage team API tokens (needs TRAINFORGE_DATABASE_URL).",
                  no_args_is_help=True)


def _database() -> Database:
    """The job store, as it is: a configured database (TRAINFORGE_DATABASE_URL) is migrated by
    ``trainforge db upgrade`` (or the API at startup) only, never by this command.

    The embedded server's own SQLite file under $TRAINFORGE_HOME is the exception: a token may
    be minted before ``trainforge serve`` first ran, so it is created the way serve creates it.

    Raises:
        typer.Exit: a configured database is not at the newest migration.
    """
    # Imported here: the API extra (SQLAlchemy) is not installed in every image.
    from services.store import Database, upgrade
    from services.store.migrate import current_revision, head_revision
    from services.store.settings import DatabaseSettings

    settings = DatabaseSettings()
    db = Database(settings.resolved_database_url, pool_size=1)
    if settings.database_url is None:
        upgrade(db.engine)
    elif current_revision(db.engine) != head_revision():
        db.dispose()
        print("error: the job store is not at the newest migration; run `trainforge db "
              "upgrade` first")
        raise typer.Exit(1)
    return db


@app.command()
def create(
    team: str = typer.Option(..., "--team", help="the team the token acts for"),
    description: str = typer.Option("", help="what the token is for"),
) -> None:
    """Mint a token; it is printed once, as the last word of the output."""
    from services.store import tokens

    db = _database()
    try:
        with db.transaction() as session:
            record, token = tokens.create_token(session, team, description)
    except ValueError as exc:
        print(f"error: {exc}")
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    print(f"created token {record.id} for team {record.team}; store it now, it is not shown "
          f"again: {token}")


@app.command()
def revoke(token: str = typer.Argument(..., help="the token, or its id")) -> None:
    """Revoke a token (its next request gets 401)."""
    from services.store import tokens
    from trainforge.errors import NotFound

    db = _database()
    try:
        with db.transaction() as session:
            record = tokens.revoke_token(session, token)
    except NotFound as exc:
        print(f"error: {exc}")
        raise typer.Exit(1) from None
    finally:
        db.dispose()
    print(f"revoked token {record.id} of team {record.team}")


@app.command("list")
def list_tokens(team: str | None = typer.Option(None, help="only this team's")) -> None:
    """List tokens (ids, teams, state; never the secrets)."""
    from services.store import tokens

    db = _database()
    try:
        with db.transaction() as session:
            records = tokens.list_tokens(session, team)
    finally:
        db.dispose()
    for r in records:
        state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
        print(f"{r.id}  {r.team:<20} {state:<24} {r.description}")
