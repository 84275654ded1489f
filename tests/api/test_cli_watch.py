"""Watching a job from the CLI: Ctrl-C stops watching (not the job), `jobs wait` comes back
to the same bar, a sweep's bar counts trials, and unfinished artifacts say so.

One real `trainforge serve` for the module, running jobs with tests.standin (well under a
second each; a ``sleep`` job runs until it is cancelled). The CLI runs as a real process; for
Ctrl-C on a pseudo-terminal, where the bar draws itself as it does for a user.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.embedded import ServeProcess, dev_client
from trainforge.joblog import strip_ansi

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@pytest.fixture(scope="module")
def served(serve_process: ServeProcess, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[dict[str, str], Path]]:
    """`trainforge serve` running stand-in jobs; yields the CLI's environment and the home."""
    home = tmp_path_factory.mktemp("watch") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINFORGE_")}
    env.update({"PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1", "TRAINFORGE_HOME": str(home),
                "TRAINFORGE_DISPATCHER_LOCAL_MODULE": "tests.standin",
                "TRAINFORGE_DISPATCHER_POLL_INTERVAL_S": "0.2",
                "TRAINFORGE_STORAGE_POLICY": '{"teams": {"dev": {"datasets": ["s3://datasets/"]}}}'})
    with serve_process(env, home.parent / "serve.log", timeout_s=60) as url:
        yield {**env, "TRAINFORGE_URL": url}, home


def _spec(tmp_path: Path, name: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.yaml"
    # yolov8n.yaml: this offline server (YOLO_OFFLINE=1) refuses the default yolov8n.pt.
    path.write_text(f"name: {name}\ndataset: {{uri: s3://datasets/ppe/v3/}}\n"
                    f"model: {{base: yolov8n.yaml}}\nretries: 0\n{extra}")
    return path


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trainforge", *args], env=env, text=True,
                          capture_output=True, timeout=120)


@pytest.fixture(autouse=True)
def _cancel_leftovers(served: tuple[dict[str, str], Path]) -> Iterator[None]:
    """After each test, cancel what it left running: the team runs one job at a time here,
    so a failed test's job would hold the slot and fail every test after it too."""
    yield
    api = _api(*served)
    for job in api.get("/v1/jobs", params={"limit": 100}).json()["items"]:
        if job["state"] not in TERMINAL:
            api.post(f"/v1/jobs/{job['id']}/cancel")
            _until_state(api, job["id"], TERMINAL)


def _api(env: dict[str, str], home: Path) -> httpx.Client:
    return dev_client(env["TRAINFORGE_URL"], home)


def _until_state(api: httpx.Client, job: str, states: tuple[str, ...]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (found := api.get(f"/v1/jobs/{job}").json())["state"] not in states:
        assert time.monotonic() < deadline, found
        time.sleep(0.1)
    return found


class Terminal:
    """The CLI on a pseudo-terminal (200 columns), its output read as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.master, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        # As from a user's terminal, Ctrl-C reaches the CLI. A suite started as a background
        # job ignores SIGINT, and an ignored signal stays ignored in every child: catching it
        # here while the CLI starts gives the child the default disposition instead.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "trainforge", *args], env=env,
                                         stdin=follower, stdout=follower, stderr=follower)
        finally:
            signal.signal(signal.SIGINT, previous)
        os.close(follower)
        self.raw = b""

    @property
    def text(self) -> str:
        return strip_ansi(self.raw.decode(errors="replace"))

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: the process closed the terminal
            return False
        self.raw += chunk
        return bool(chunk)

    def expect(self, pattern: str, timeout_s: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while (found := re.search(pattern, self.text)) is None:
            assert time.monotonic() < deadline, f"no {pattern!r} in:\n{self.text[-3000:]}"
            assert self._read(0.2) or re.search(pattern, self.text), self.text[-3000:]
        return found

    def finish(self, timeout_s: float = 30) -> int:
        deadline = time.monotonic() + timeout_s
        while self._read(0.2):
            assert time.monotonic() < deadline, self.text[-3000:]
        os.close(self.master)
        return self.proc.wait(timeout=timeout_s)


def _interrupt_watch(env: dict[str, str], state: str, *args: str) -> tuple[int, str]:
    """Run ``trainforge ARGS`` on a terminal, Ctrl-C once its bar shows the job ``state``."""
    term = Terminal(env, *args)
    term.expect(rf"{state} .*epoch -")  # the bar is drawn
    term.proc.send_signal(signal.SIGINT)
    return term.finish(), term.text


def test_ctrl_c_stops_watching_the_job_goes_on_and_jobs_wait_comes_back(
    served: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, home = served
    api = _api(env, home)
    code, text = _interrupt_watch(env, "RUNNING", "jobs", "submit",
                                  str(_spec(tmp_path, "sleep-watch")), "--wait")
    job = re.search(r"submitted (j[0-9a-z]+)", text).group(1)  # type: ignore[union-attr]
    assert code == 130, text
    assert (f"stopped watching; job {job} is still RUNNING — trainforge jobs wait {job} | "
            f"trainforge jobs cancel {job}") in text
    assert "Aborted" not in text and "Traceback" not in text
    assert api.get(f"/v1/jobs/{job}").json()["state"] == "RUNNING", "the job goes on"

    # The team runs one job at a time here: a second one waits, and says so.
    queued = _cli(env, "jobs", "submit", str(_spec(tmp_path, "sleep-queued")))
    second = re.search(r"submitted (j[0-9a-z]+)", queued.stdout).group(1)  # type: ignore[union-attr]
    code, text = _interrupt_watch(env, "QUEUED", "jobs", "wait", second)
    assert code == 130 and f"stopped watching; job {second} is still QUEUED —" in text, text

    code, text = _interrupt_watch(env, "RUNNING", "jobs", "wait", job)  # the same bar again
    assert code == 130 and f"stopped watching; job {job} is still RUNNING —" in text, text
    for each in (job, second):
        assert _cli(env, "jobs", "cancel", each).returncode == 0
        _until_state(api, each, TERMINAL)
    ended = _cli(env, "jobs", "wait", job)
    assert ended.returncode == 1 and f"job {job} CANCELLED" in ended.stdout, ended.stdout


def test_a_sweeps_bar_counts_trials_and_its_best_score(
    served: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, _ = served
    spec = _spec(tmp_path, "sweep-watch", "kind: sweep\ntrain: {epochs: 3}\n"
                 "sweep: {trials: 3, space: {lr0: {loguniform: [0.0001, 0.1]}}}\n")
    done = _cli(env, "jobs", "submit", str(spec), "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sweep: 3 stand-in trials" in done.stdout, "the plan notice is printed"
    # The stand-in's trial i reports mAP50-95 0.1 × epoch + 0.01 × i: the best is 0.32.
    assert re.search(r"SUCCEEDED .*trial 3 of 3 best mAP50-95 0\.3200", done.stdout), done.stdout
    assert "epoch -" not in done.stdout


def test_artifacts_of_an_unfinished_job_say_they_are_not_complete(
    served: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, home = served
    api = _api(env, home)
    sleeping = re.search(r"submitted (j[0-9a-z]+)", _cli(  # type: ignore[union-attr]
        env, "jobs", "submit", str(_spec(tmp_path, "sleep-artifacts"))).stdout).group(1)
    _until_state(api, sleeping, ("RUNNING",))
    listing = api.get(f"/v1/jobs/{sleeping}/artifacts").json()
    assert listing["complete"] is False and listing["items"], listing
    listed = _cli(env, "jobs", "artifacts", sleeping)
    assert listed.returncode == 0 and "spec.json" in listed.stdout
    assert f"note: job {sleeping} is RUNNING: its artifacts are not complete" in listed.stderr
    api.post(f"/v1/jobs/{sleeping}/cancel")
    _until_state(api, sleeping, ("CANCELLED",))
    stopped = _cli(env, "jobs", "artifacts", sleeping, "--download", str(tmp_path / "dl"))
    assert stopped.returncode == 0, stopped.stderr
    assert "is CANCELLED: its artifacts are not complete (what it wrote before it stopped" \
        in stopped.stderr

    done = _cli(env, "jobs", "submit", str(_spec(tmp_path, "artifacts-done")), "--wait")
    job = re.search(r"submitted (j[0-9a-z]+)", done.stdout).group(1)  # type: ignore[union-attr]
    # SUCCEEDED comes from the job itself; complete waits until its run exited too.
    deadline = time.monotonic() + 30
    while not (listing := api.get(f"/v1/jobs/{job}/artifacts").json())["complete"]:
        assert time.monotonic() < deadline, listing
        time.sleep(0.1)
    assert "train/best.pt" in {item["name"] for item in listing["items"]}
    final = _cli(env, "jobs", "artifacts", job)
    assert "train/best.pt" in final.stdout and "note:" not in final.stderr
