"""A job's console output reaches the artifacts store while it runs and when it ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from trainforge.storage import LocalStore

JOB = textwrap.dedent(
    """
    import os, subprocess, sys, time
    from pathlib import Path
    from trainforge.joblog import ship_log
    from trainforge.storage import LocalStore

    store = LocalStore(sys.argv[1])
    with ship_log(store, "jobs/j1/attempts/1/log.txt", interval_s=0.2):
        print("epoch 1/3 from python", flush=True)
        os.write(2, b"warning from fd 2\\n")
        go = Path(sys.argv[2])
        deadline = time.monotonic() + 30
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run([sys.executable, "-c", "print('from a child process')"], check=True)
    """
)


def test_output_is_uploaded_during_and_after_the_run(tmp_path: Path) -> None:
    root, go = tmp_path / "artifacts", tmp_path / "go"
    store = LocalStore(root)
    key = "jobs/j1/attempts/1/log.txt"
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(root), str(go)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    during = ""
    deadline = time.monotonic() + 30
    while "warning from fd 2" not in during and time.monotonic() < deadline:
        time.sleep(0.1)
        during = store.get(key).decode() if store.exists(key) else ""
    go.touch()
    console, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "epoch 1/3 from python" in during, "the log is readable while the job runs"
    after = store.get(key).decode()
    assert "from a child process" in after and "warning from fd 2" in after
    assert b"epoch 1/3 from python" in console, "output still reaches the console"


def test_the_shipped_log_has_no_terminal_escape_codes(tmp_path: Path) -> None:
    """Ray's coloured prefixes and Ultralytics' colours and line erasing reach the console,
    but the shipped log is plain text, however the pipe splits the sequences."""
    job = textwrap.dedent(
        """
        import os, sys, time
        from trainforge.joblog import ship_log
        from trainforge.storage import LocalStore

        coloured = (b"\\x1b[36m(RayTrainWorker pid=7)\\x1b[0m \\x1b[34m\\x1b[1mtrain: \\x1b[0m"
                    b"Scanning\\x1b[K done\\n\\x1b]8;;https://docs\\x07a link\\x1b]8;;\\x07\\n")
        with ship_log(LocalStore(sys.argv[1]), "log.txt", interval_s=0.2):
            for i in range(len(coloured)):  # one byte at a time: sequences cut anywhere
                os.write(2, coloured[i:i + 1])
                time.sleep(0.001)
        """
    )
    root = tmp_path / "artifacts"
    done = subprocess.run([sys.executable, "-c", job, str(root)], capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert LocalStore(root).get("log.txt").decode() == (
        "(RayTrainWorker pid=7) train: Scanning done\na link\n")
    assert b"\x1b[36m" in done.stdout, "the console (fd 1) keeps its colours"
