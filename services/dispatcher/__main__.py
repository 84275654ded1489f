"""``python -m services.dispatcher``: the dispatcher as its own process, /metrics on its port."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from types import FrameType

from prometheus_client import start_http_server

from services.dispatcher.build import make_dispatcher
from services.dispatcher.settings import get_settings
from services.store import Database, upgrade
from trainforge.private import private_home, restrict_umask


def main() -> int:
    # Before anything is created (the runs LocalBackend starts inherit it): see
    # trainforge/private.py.
    restrict_umask()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = get_settings()
    if settings.embedded:
        private_home(settings.home)
    db = Database(settings.resolved_database_url, pool_size=2)
    if settings.migrate_on_startup:
        upgrade(db.engine)
    start_http_server(settings.dispatcher_metrics_port, addr=settings.dispatcher_metrics_host)
    dispatcher = make_dispatcher(settings, db)
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %d: stopping after this loop", signum)
        stop.set()
        dispatcher.wake()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    dispatcher.run(stop, settings.dispatcher_poll_interval_s)
    db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
