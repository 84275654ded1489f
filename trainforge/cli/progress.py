"""The progress bar of ``trainforge jobs submit --wait`` and ``trainforge jobs wait``.

The bar follows the job's events (``GET /v1/jobs/{id}/events?after=N``, one small request a
second; no stream slot held): they carry every state change, every finished epoch (a sweep's
per trial) and the messages a job marks as notices (trainforge/events.py ``NOTICE``), which
are printed above the bar: training on the CPU, a resumed run, export outcomes, the promotion
verdict, a sweep's plan and best trial. Watching again replays the job's events from the
first, so ``jobs wait JOB`` shows the same bar and notices as the watcher that was stopped.

Ctrl-C stops watching, not the job: :func:`watch` raises :class:`StoppedWatching`, whose
message says how to come back or cancel.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from trainforge.client import TERMINAL, ApiError, Client, JobFailed
from trainforge.events import NOTICE, SWEEP_METRIC, SWEEP_TRIALS

#: The score a train job's bar shows (its latest epoch's) and a sweep's default metric.
MAP_KEY = "metrics/mAP50-95(B)"
#: Events fetched per request; a full page is followed at once by the next.
PAGE = 500


class StoppedWatching(Exception):
    """The user pressed Ctrl-C: the job goes on; :attr:`message` says how to come back."""

    def __init__(self, job_id: str, state: str) -> None:
        self.job_id, self.state = job_id, state
        where = f"is still {state}" if state not in TERMINAL else f"is {state}"
        super().__init__(f"stopped watching; job {job_id} {where} — trainforge jobs wait "
                         f"{job_id} | trainforge jobs cancel {job_id}")

    @property
    def message(self) -> str:
        return str(self)


def _label(metric: str) -> str:
    """``metrics/mAP50-95(B)`` → ``mAP50-95``."""
    return metric.removeprefix("metrics/").removesuffix("(B)")


@dataclass
class JobView:
    """What the bar shows of one job, built from its events in order (:meth:`apply`)."""

    state: str = "QUEUED"
    epoch: int = 0
    epochs: int = 0
    #: A train job's latest epoch's mAP50-95.
    score: float | None = None
    #: Sweeps: the trials seen (in order of their first epoch), how many the plan runs, the
    #: metric that ranks them and its best value so far (any trial, any epoch).
    trials: list[str] = field(default_factory=list)
    trials_total: int | None = None
    metric: str = MAP_KEY
    best: float | None = None

    @property
    def sweep(self) -> bool:
        return bool(self.trials) or self.trials_total is not None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def apply(self, event: dict[str, Any]) -> str | None:
        """Take one event (as ``GET /v1/jobs/{id}/events`` returns it).

        Returns:
            A line to print above the bar (a notice, or why the job retries), or None.
        """
        data = event.get("data") or {}
        if event["type"] == "state":
            self.state = event["to_state"]
            if self.state == "RETRYING":
                return f"retrying: {event['reason']}"
        elif event["type"] == "progress":
            self._progress(event.get("trial"), data)
        elif event["type"] == "message" and data.get(NOTICE):
            if data.get(SWEEP_TRIALS) is not None:
                self.trials_total = int(data[SWEEP_TRIALS])
                self.metric = str(data.get(SWEEP_METRIC) or self.metric)
            return str(event["reason"])
        return None

    def _progress(self, trial: str | None, data: dict[str, Any]) -> None:
        metrics = data.get("metrics") or {}
        if trial is None:
            self.epoch, self.epochs = int(data["epoch"]), int(data["epochs"])
            value = metrics.get(MAP_KEY)
            self.score = float(value) if isinstance(value, int | float) else self.score
            return
        if trial not in self.trials:
            self.trials.append(trial)
        value = metrics.get(self.metric)
        if isinstance(value, int | float) and (self.best is None or value > self.best):
            self.best = float(value)

    def fields(self) -> dict[str, Any]:
        """The bar's task fields: ``state``, ``detail``, ``score``, ``completed``, ``total``."""
        if self.sweep:
            of = f" of {self.trials_total}" if self.trials_total else ""
            best = "-" if self.best is None else f"{self.best:.4f}"
            return {"state": self.state, "detail": f"trial {len(self.trials)}{of}",
                    "score": f"best {_label(self.metric)} {best}",
                    "completed": len(self.trials), "total": self.trials_total}
        epoch = f"{self.epoch}/{self.epochs}" if self.epochs else "-"
        score = "-" if self.score is None else f"{self.score:.4f}"
        return {"state": self.state, "detail": f"epoch {epoch}",
                "score": f"{_label(MAP_KEY)} {score}",
                "completed": self.epoch, "total": self.epochs or None}


def _bar(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.fields[state]:<10}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TextColumn("{task.fields[score]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def watch(client: Client, job_id: str, console: Console, *, poll_s: float = 1.0
          ) -> dict[str, Any]:
    """Show the job's progress bar until it ends.

    Args:
        client: the API client.
        job_id: the job to watch (from its first event: a watcher that comes back sees the
            same bar and notices).
        console: where the bar and the notices go.
        poll_s: seconds between requests while nothing new happened.

    Returns:
        The job (``GET /v1/jobs/{id}``) once it SUCCEEDED.

    Raises:
        JobFailed: it ended FAILED or CANCELLED.
        StoppedWatching: Ctrl-C; the job goes on.
        ApiError: the API refused (no such job) or could not be reached.
    """
    view = JobView()
    try:
        with _ctrl_c() as pressed, _bar(console) as bar:
            task = bar.add_task(job_id, **view.fields())
            after = 0
            while not view.terminal:
                events = client.events(job_id, after=after, limit=PAGE)
                for event in events:
                    after = event["id"]
                    line = view.apply(event)
                    if line:
                        bar.console.print(Text(line), soft_wrap=True)
                bar.update(task, **view.fields())
                if len(events) < PAGE and not view.terminal:
                    pressed.wait(poll_s)
                if pressed.is_set():
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise StoppedWatching(job_id, _state_now(client, job_id, view.state)) from None
    job = client.get(job_id)
    if job["state"] != "SUCCEEDED":
        raise JobFailed.of(job)
    return job


@contextmanager
def _ctrl_c() -> Iterator[threading.Event]:
    """An event set by Ctrl-C, besides the KeyboardInterrupt Python raises for it.

    The interrupt alone can be lost: raised while the interpreter runs a finalizer (an HTTP
    response or a generator collected mid-request), it is printed as "Exception ignored" and
    the watch would go on. The event is checked between requests, so Ctrl-C always stops
    watching within a poll.
    """
    pressed = threading.Event()
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Signal handlers belong to the main thread; an ignored Ctrl-C (a shell's background
        # job) stays ignored.
        yield pressed
        return

    def on_sigint(signum: int, frame: Any) -> None:
        pressed.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, previous)


def _state_now(client: Client, job_id: str, last_seen: str) -> str:
    """The job's state as the API has it now; the last one seen if asking fails (or the user
    presses Ctrl-C again)."""
    try:
        return str(client.get(job_id)["state"])
    except (KeyboardInterrupt, ApiError):
        return last_seen
