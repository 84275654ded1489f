"""Runs one attempt's entrypoint for LocalBackend and records how it ended.

Started by :class:`services.dispatcher.backends.local.LocalBackend` in its own session, with
the attempt's ``run.lock`` already locked (flock) on an inherited descriptor. The lock stays
held while this runner or the entrypoint lives (the entrypoint inherits the descriptor too), so
"the lock is held" means "the run is alive" to any dispatcher process, including one started
after the launching dispatcher died. When the entrypoint exits, ``exit.json`` is written
atomically; that file is how the outcome survives the dispatcher.

Usage: ``python -m services.dispatcher.local_runner --dir D --lock-fd N --timeout-s S -- CMD…``

It lives outside the backends package and imports only the standard library, so that it starts
in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

# The files of one attempt's directory (shared with LocalBackend).
PID_FILE = "pid"
EXIT_FILE = "exit.json"
CANCEL_MARKER = "cancel-requested"
TERM_SENT = "sigterm-sent"
OUTPUT_LOG = "output.log"
RUN_LOCK = "run.lock"
LAUNCH_LOCK = "launch.lock"

_stop_requested = False


def write_atomic(path: Path, text: str) -> None:
    """Write a small file so that readers see all of it or nothing."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _on_term(_signum: int, _frame: FrameType | None) -> None:
    # killpg() already delivered the signal to the entrypoint; just remember why it stops.
    global _stop_requested
    _stop_requested = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--lock-fd", type=int, required=True)
    parser.add_argument("--timeout-s", type=float, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    directory: Path = args.dir
    signal.signal(signal.SIGTERM, _on_term)
    write_atomic(directory / PID_FILE, f"{os.getpid()}\n")
    started = time.time()
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, pass_fds=(args.lock_fd,))
    timed_out = False
    try:
        returncode = child.wait(timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        child.terminate()
        try:
            returncode = child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            returncode = child.wait()
    outcome = {
        "returncode": returncode,
        "cancelled": _stop_requested or (directory / CANCEL_MARKER).exists(),
        "timed_out": timed_out,
        "seconds": round(time.time() - started, 3),
    }
    write_atomic(directory / EXIT_FILE, json.dumps(outcome) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
