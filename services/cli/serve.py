"""``trainforge serve``: the embedded default (API + dispatcher in one process).

Everything lives under ``$TRAINFORGE_HOME``, owner-only (trainforge/private.py). Up to
:data:`EMBEDDED_MAX_ACTIVE` jobs run at once, at most :data:`EMBEDDED_MAX_RUNNING_JOBS` per
team, so that one team's long training does not keep another team's job waiting. The jobs
share one warm local Ray head (services/dispatcher/local_ray.py), started with the first job
and stopped with the server.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer

from trainforge.private import (
    PRIVATE_FILE_MODE,
    private_dir,
    private_file,
    private_home,
    restrict_umask,
)

if TYPE_CHECKING:
    from services.dispatcher.local_ray import LocalRayHead
    from services.dispatcher.settings import DispatcherSettings
    from services.store import Database
    from services.store.settings import StoreSettings, TeamLimits

#: Jobs launched at once unless TRAINFORGE_DISPATCHER_MAX_ACTIVE says otherwise.
EMBEDDED_MAX_ACTIVE = 2
#: A team's launched jobs at once unless its limits (TRAINFORGE_DEFAULT_LIMITS or its entry in
#: TRAINFORGE_TEAM_LIMITS) set ``max_running_jobs``, ``null`` included.
EMBEDDED_MAX_RUNNING_JOBS = 1
#: What an older version may have left readable at the top of $TRAINFORGE_HOME (the database
#: is made private when it is opened: services/store/db.py).
_HOME_ENTRIES = ("secret-key", "dev-token", "artifacts", "models", "dispatcher", "cache", "work")

_Settings = TypeVar("_Settings", bound="StoreSettings")


def _dev_token(home: Path, db: Database) -> Path:
    """Keep a working token for the embedded team (``dev``) in ``$TRAINFORGE_HOME/dev-token``
    (0600); it is the team that may read local paths (trainforge/access.py)."""
    from services.store import tokens
    from trainforge.access import EMBEDDED_TEAM
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
        _, token = tokens.create_token(session, EMBEDDED_TEAM, "embedded server dev token")
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    private_file(path)  # O_CREAT's mode does not apply to a file that already existed
    return path


def _make_home_private(home: Path) -> None:
    """$TRAINFORGE_HOME 0700 (created so if missing), and what is known to live at its top."""
    if not private_home(home):
        return  # a shared directory (~, /tmp): its "models" or "work" may not be ours
    for name in _HOME_ENTRIES:
        path = home / name
        if path.is_dir() and not path.is_symlink():
            private_dir(path)
        elif path.is_file():
            private_file(path)


def embedded_limits(settings: _Settings) -> _Settings:
    """``settings`` with ``max_running_jobs`` = :data:`EMBEDDED_MAX_RUNNING_JOBS` in the default
    limits and in every team's entry that does not set it itself.

    Args:
        settings: the API's or the dispatcher's settings, as read from the environment.

    Returns:
        A copy with the embedded default filled in.
    """

    def filled(limits: TeamLimits) -> TeamLimits:
        if "max_running_jobs" in limits.model_fields_set:
            return limits
        return limits.model_copy(update={"max_running_jobs": EMBEDDED_MAX_RUNNING_JOBS})

    return settings.model_copy(update={
        "default_limits": filled(settings.default_limits),
        "team_limits": {team: filled(limits) for team, limits in settings.team_limits.items()},
    })


def serve(
    host: str = typer.Option("127.0.0.1", help="interface to listen on"),
    port: int = typer.Option(8000, help="port to listen on"),
) -> None:
    """Run the API and the dispatcher (local backend) in one process under $TRAINFORGE_HOME."""
    import uvicorn

    from services.api import create_app
    from services.api.settings import ApiSettings
    from services.dispatcher.build import make_backend, make_dispatcher
    from services.dispatcher.settings import DispatcherSettings
    from services.store import Database, upgrade

    # Before anything is created: the jobs, the SQLite files and the stores inherit it.
    restrict_umask()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    local_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
    url = f"http://{local_host}:{port}"
    api_settings = embedded_limits(ApiSettings(embedded=True, migrate_on_startup=False))
    dispatcher_settings = embedded_limits(DispatcherSettings(embedded=True, api_url=url))
    if dispatcher_settings.dispatcher_max_active is None:
        # A laptop has room for few trainings at once; two, so that with one job per team a
        # second team's job starts while the first team's long one runs.
        dispatcher_settings = dispatcher_settings.model_copy(
            update={"dispatcher_max_active": EMBEDDED_MAX_ACTIVE}
        )
    home = api_settings.home
    _make_home_private(home)
    db = Database(api_settings.resolved_database_url, pool_size=2)
    upgrade(db.engine)
    token_path = _dev_token(home, db)
    stop = threading.Event()
    ray_head = _warm_ray(dispatcher_settings, home)
    dispatcher = make_dispatcher(dispatcher_settings, db,
                                 make_backend(dispatcher_settings, ray_head=ray_head))
    worker = threading.Thread(
        target=dispatcher.run,
        args=(stop, dispatcher_settings.dispatcher_poll_interval_s),
        name="dispatcher",
        daemon=True,
    )
    worker.start()
    print(f"trainforge serving on {url} (home {home}; dev token in {token_path})\n"
          f"dashboard: {url}/ui/ (sign in with the dev token: cat {token_path})", flush=True)
    # uvicorn stops on SIGTERM, then raises the signal again under the handler it found: make
    # that one an exit, so that the `finally` below stops the dispatcher and the Ray head.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        # The API wakes the dispatcher when a job is cancelled: its run stops at once.
        # X-Forwarded-* only from TRAINFORGE_API_TRUSTED_PROXIES (services/api/app.py).
        uvicorn.run(create_app(api_settings, wake_dispatcher=dispatcher.wake), host=host,
                    port=port, log_level="info", proxy_headers=False)
    finally:
        stop.set()
        dispatcher.wake()
        worker.join(timeout=10)
        if ray_head is not None:
            ray_head.stop()
        db.dispose()


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)


def _warm_ray(settings: DispatcherSettings, home: Path) -> LocalRayHead | None:
    """The Ray head the local backend's jobs share (TRAINFORGE_DISPATCHER_WARM_RAY), or None.

    Not for a stand-in module (TRAINFORGE_DISPATCHER_LOCAL_MODULE): it runs no Ray.
    """
    from services.dispatcher.local_ray import LocalRayHead

    if settings.dispatcher_backend != "local" or not settings.dispatcher_warm_ray \
            or settings.dispatcher_local_module:
        return None
    # Enough CPUs for the jobs that may run at once (a default spec asks for 8): Ray
    # counts CPUs to schedule, it does not pin them.
    per_job = max(os.cpu_count() or 1, 8)
    return LocalRayHead(home, num_cpus=per_job * (settings.dispatcher_max_active or 1))
