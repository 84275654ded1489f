"""Publishes model versions on request and SIGKILLs the publisher at a given delay.

Used by test_publish_kill.py. One process imports everything once, then forks a fresh child per
request, so each of the many kills costs milliseconds instead of an interpreter start. The child
is a plain ``trainforge.registry.publish`` call, exactly what the export job's last step runs.

Protocol (JSON lines): stdin ``{"models_uri", "name", "version", "files", "kill_after"}``
(``kill_after`` seconds, or null to let it finish); stdout ``{"killed": bool, "exit": int}``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path


def _child(request: dict[str, object]) -> None:
    from trainforge.registry import publish

    try:
        files = {k: Path(str(v)) for k, v in dict(request["files"]).items()}  # type: ignore[call-overload]
        publish(str(request["models_uri"]), str(request["name"]), str(request["version"]), files,
                {"source": {"job_id": request["version"]}})
    except BaseException:
        traceback.print_exc()
        os._exit(3)
    os._exit(0)


def _warm_up(store: object) -> None:
    """One request in the parent, so that children start with botocore's lazy setup done.

    The parent's pooled connections are then closed: a child killed mid-request must not leave
    a half-used socket that the next child would inherit.
    """
    store.exists("warm-up")  # type: ignore[attr-defined]
    client = getattr(store, "_client", None)
    if client is not None:
        client._endpoint.http_session.close()


def main() -> None:
    import trainforge.registry  # noqa: F401  (imported before forking: children start warm)
    from trainforge.storage.factory import store_for_uri

    print(json.dumps({"ready": True}), flush=True)
    warm: set[str] = set()
    for line in sys.stdin:
        request = json.loads(line)
        uri = str(request["models_uri"])
        if uri not in warm:
            _warm_up(store_for_uri(uri))
            warm.add(uri)
        pid = os.fork()
        if pid == 0:
            _child(request)
        delay = request.get("kill_after")
        if delay is not None:
            time.sleep(float(delay))
            os.kill(pid, signal.SIGKILL)  # a zombie ignores it: the status says who won
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
        print(json.dumps({"killed": killed, "exit": code}), flush=True)


if __name__ == "__main__":
    main()
