"""A webhook relay that SIGKILLs itself at one crash point (used by test_webhook_delivery.py).

Usage: ``python tests/dispatcher/killed_relay.py webhook_claimed|webhook_sent`` with the
dispatcher's TRAINFORGE_* environment. Runs relay passes until it reaches the point, then dies
the way an OOM-killed or evicted pod does: no cleanup, no except/finally.
"""

from __future__ import annotations

import os
import signal
import sys

from services.dispatcher.build import make_relay
from services.dispatcher.settings import DispatcherSettings
from services.store import Database


def main() -> None:
    target = sys.argv[1]
    settings = DispatcherSettings()
    db = Database(settings.resolved_database_url, pool_size=2)

    def fault(point: str) -> None:
        if point == target:
            os.kill(os.getpid(), signal.SIGKILL)

    relay = make_relay(settings, db, owner=f"killed-{os.getpid()}", fault=fault)
    for _ in range(100):
        relay.run_once()
    sys.exit("the crash point was never reached")


if __name__ == "__main__":
    main()
