"""A dispatcher that SIGKILLs itself at one crash point (used by test_crash_safety.py).

Usage: ``python tests/dispatcher/killed_dispatcher.py after_claim|after_launch`` with the
dispatcher's TRAINFORGE_* environment. Runs loops until it reaches the point, then dies the way
an OOM-killed or evicted pod does: no cleanup, no except/finally.
"""

from __future__ import annotations

import os
import signal
import sys

from services.dispatcher.build import make_dispatcher
from services.dispatcher.settings import DispatcherSettings
from services.store import Database


def main() -> None:
    target = sys.argv[1]
    settings = DispatcherSettings()
    db = Database(settings.resolved_database_url, pool_size=1)
    def fault(point: str) -> None:
        if point == target:
            os.kill(os.getpid(), signal.SIGKILL)

    dispatcher = make_dispatcher(settings, db, fault=fault)
    for _ in range(100):
        dispatcher.run_once()
    sys.exit("the crash point was never reached")


if __name__ == "__main__":
    main()
