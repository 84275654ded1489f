"""``trainforge serve``: the embedded default (API + dispatcher in one process)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from services.store import Database


def _dev_token(home: Path, db: Database) -> Path:
    """Keep a working token for team ``dev`` in ``$TRAINFORGE_HOME/dev-token`` (0600)."""
    from services.store import tokens
    from trainforge.errors import Unauthenticated

    path = home / "dev-token"
    if path.exists():
        try:
            with db.transaction() as session:
                tokens.authenticate(session, path.read_text().strip())
            return path
        except Unauthenticated:
            pass  # revoked or from another database: mint a new one
    with db.transaction() as session:
        _, token = tokens.create_token(session, "dev", "embedded server dev token")
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    os.chmod(path, 0o600)
    return path


def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="port to listen on"),
) -> None:
    """Run the API and the dispatcher (local backend) in one process under $TRAINFORGE_HOME."""
    import uvicorn

    from services.api import create_app
    from services.api.settings import ApiSettings
    from services.dispatcher.build import make_dispatcher
    from services.dispatcher.settings import DispatcherSettings
    from services.store import Database, upgrade

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    local_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    url = f"http://{local_host}:{port}"
    api_settings = ApiSettings(embedded=True, migrate_on_startup=False)
    dispatcher_settings = DispatcherSettings(embedded=True, api_url=url)
    if dispatcher_settings.dispatcher_max_active is None:
        # One training at a time on a laptop unless TRAINFORGE_DISPATCHER_MAX_ACTIVE says more.
        dispatcher_settings = dispatcher_settings.model_copy(
            update={"dispatcher_max_active": 1}
        )
    home = api_settings.home
    db = Database(api_settings.resolved_database_url, pool_size=2)
    upgrade(db.engine)
    token_path = _dev_token(home, db)
    stop = threading.Event()
    dispatcher = make_dispatcher(dispatcher_settings, db)
    worker = threading.Thread(
        target=dispatcher.run,
        args=(stop, dispatcher_settings.dispatcher_poll_interval_s),
        name="dispatcher",
        daemon=True,
    )
    worker.start()
    print(f"trainforge serving on {url} (home {home}; dev token in {token_path})", flush=True)
    try:
        uvicorn.run(create_app(api_settings), host=host, port=port, log_level="info")
    finally:
        stop.set()
        worker.join(timeout=10)
        db.dispose()
