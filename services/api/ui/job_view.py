"""What the job page shows, gathered from the API's own use cases (services/api/jobs.py,
artifacts.py, streams.py): nothing here decides anything the JSON API does not."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from services.api import artifacts, streams
from services.api import jobs as service
from services.api.schemas import ArtifactOut, EventOut, JobOut
from services.api.state import AppState
from trainforge.errors import NotFound, ObjectNotFound
from trainforge.spec import JobKind

#: Ultralytics' names of the curves the job page draws, in the chart's series order.
CURVES = ("train/box_loss", "train/cls_loss", "train/dfl_loss",
          "metrics/mAP50(B)", "metrics/mAP50-95(B)")
MAP50_95 = "metrics/mAP50-95(B)"
#: The log tail's size: the page shows the end of the log, not all of a long run's output.
LOG_TAIL_BYTES = 64 * 1024
_EVENT_PAGES = 20  # × 1000 events: more than any job writes; bounds a pathological one
_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
REPORT_NAME = "train/report.json"
_TERMINAL_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class JobPage:
    job: JobOut
    events: list[EventOut]
    curves: dict[str, list[float | None]]  # "epoch" and each of CURVES, aligned
    artifacts: list[ArtifactOut]
    plots: list[str]
    report: dict[str, Any] | None
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: The job that resumed this one (the other way, ``job.resumed_from``, is on the job).
    resumed_as: str | None = None

    @property
    def last_event_id(self) -> int:
        return self.events[-1].id if self.events else 0

    @property
    def timeline(self) -> list[EventOut]:
        """State changes and messages (the per-epoch progress is the chart's)."""
        return [e for e in self.events if e.type != "progress"]


def duration_s(job: JobOut, now: datetime | None = None) -> float | None:
    if job.started_at is None:
        return None
    end = job.finished_at or now or datetime.now(UTC)
    return max(0.0, (end - job.started_at).total_seconds())


def all_events(state: AppState, team: str, job_id: str) -> list[EventOut]:
    """Every event of the job, oldest first (the JSON API's pages, read to the end)."""
    events: list[EventOut] = []
    after = 0
    for _ in range(_EVENT_PAGES):
        page = service.events_page(state, team, job_id, after=after, limit=1000)
        events.extend(page.items)
        if len(page.items) < 1000:
            break
        after = page.next_after
    return events


def curves(events: list[EventOut]) -> dict[str, list[float | None]]:
    """Per-epoch values of :data:`CURVES` from the job's own progress events (the latest
    report of an epoch wins: a resumed attempt repeats epochs)."""
    by_epoch: dict[int, dict[str, Any]] = {}
    for event in events:
        if event.type == "progress" and event.trial is None and "epoch" in event.data:
            by_epoch[int(event.data["epoch"])] = dict(event.data.get("metrics") or {})
    epochs = sorted(by_epoch)
    out: dict[str, list[float | None]] = {"epoch": [float(e) for e in epochs]}
    for name in CURVES:
        out[name] = [_finite(by_epoch[e].get(name)) for e in epochs]
    return out


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def read_report(state: AppState, job_id: str) -> dict[str, Any] | None:
    """train/report.json of a job the caller may read, or None until the run uploaded it."""
    try:
        reader, _ = artifacts.open_artifact(state, job_id, REPORT_NAME)
    except NotFound:
        return None
    with reader:
        data = json.loads(reader.read())
    return data if isinstance(data, dict) else None


def sweep_trials(job: JobOut, report: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The trial table: the report's once the sweep ended (configs, best scores, stopped
    early), else the live per-trial progress the job record holds."""
    if job.kind is not JobKind.SWEEP:
        return []
    finished = ((report or {}).get("sweep") or {}).get("trials")
    if isinstance(finished, list):
        return [t for t in finished if isinstance(t, dict)]
    return [{"trial_id": t.trial, "config": {}, "status": "running", "epochs_run": t.epoch,
             "best_map50_95": t.metrics.get(MAP50_95), "stopped_early": False, "error": None}
            for t in job.trials or []]


def job_page(state: AppState, team: str, job_id: str) -> JobPage:
    """Everything the job page shows.

    Raises:
        JobNotFound: no such job for this team (another team's is the same 404).
        StorageError: the artifacts store failed (503).
    """
    job = service.get(state, team, job_id)
    events = all_events(state, team, job_id)
    # Relative links: the dashboard links to its own file route, but the listing (sizes,
    # sha256) is the API's.
    listed = artifacts.list_artifacts(state, team, job_id, "").items
    names = {a.name for a in listed}
    report = read_report(state, job_id) if REPORT_NAME in names else None
    # The run's plots (curves, confusion matrices); its sample batches (JPEGs) stay artifacts.
    plots = [a.name for a in listed if a.name.startswith("train/") and a.name.endswith(".png")]
    return JobPage(job=job, events=events, curves=curves(events), artifacts=listed,
                   plots=plots, report=report, trials=sweep_trials(job, report),
                   resumed_as=service.resumed_as(state, team, job_id))


def image_type(name: str) -> str | None:
    dot = name.rfind(".")
    return _IMAGE_TYPES.get(name[dot:].lower()) if dot >= 0 else None


def log_tail(state: AppState, team: str, job_id: str) -> tuple[str, bool]:
    """The end of the latest attempt's log, and whether the log can still grow.

    Raises:
        JobNotFound: no such job for this team.
    """
    job = service.get(state, team, job_id)
    target = streams.log_target(state, team, job_id, None)
    offset = 0
    if target is not None:
        try:
            size = state.artifacts.head(target.key).size
            offset = max(0, size - LOG_TAIL_BYTES)
        except ObjectNotFound:
            pass
    text = streams.read_log(state, target, offset).decode("utf-8", errors="replace")
    if offset:
        text = text.split("\n", 1)[-1]  # start at a whole line
    # Ray colours its workers' prefixes: terminal escapes are noise in a page.
    return _TERMINAL_ESCAPES.sub("", text), not job.state.terminal


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    trial: str
    value: float
    score: float
    stopped_early: bool


@dataclass(frozen=True)
class Scatter:
    """A hyperparameter against the trials' best mAP50-95, in the SVG's own coordinates."""

    param: str
    params: list[str]
    points: list[Point]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    log_x: bool
    width: int = 560
    height: int = 280
    margin: int = 48


def sweep_scatter(trials: list[dict[str, Any]], param: str | None) -> Scatter | None:
    """The scatter of ``param`` (default: the first numeric hyperparameter) vs score; None
    when no trial has both a numeric value and a score."""
    numeric = sorted({k for t in trials for k, v in (t.get("config") or {}).items()
                      if _finite(v) is not None})
    if not numeric:
        return None
    chosen = param if param is not None and param in numeric else numeric[0]
    pairs = [(t, _finite((t.get("config") or {}).get(chosen)), _finite(t.get("best_map50_95")))
             for t in trials]
    scored = [(t, x, y) for t, x, y in pairs if x is not None and y is not None]
    if not scored:
        return None
    xs, ys = [x for _, x, _ in scored], [y for _, _, y in scored]
    # Learning rates and the like span decades: a log axis keeps them apart.
    log_x = min(xs) > 0 and max(xs) / min(xs) >= 20
    fx = [math.log10(x) for x in xs] if log_x else xs
    x_lo, x_hi = _padded(min(fx), max(fx))
    y_lo, y_hi = _padded(min(ys), max(ys))
    plot = Scatter(param=chosen, params=numeric, points=[], x_range=(min(xs), max(xs)),
                   y_range=(y_lo, y_hi), log_x=log_x)
    inner_w = plot.width - 2 * plot.margin
    inner_h = plot.height - 2 * plot.margin
    points = [Point(x=plot.margin + (x - x_lo) / (x_hi - x_lo) * inner_w,
                    y=plot.height - plot.margin - (y - y_lo) / (y_hi - y_lo) * inner_h,
                    trial=str(t.get("trial_id")), value=raw, score=y,
                    stopped_early=bool(t.get("stopped_early")))
              for (t, raw, y), x in zip(scored, fx, strict=True)]
    return Scatter(param=chosen, params=numeric, points=points, x_range=plot.x_range,
                   y_range=plot.y_range, log_x=log_x)


def _padded(lo: float, hi: float) -> tuple[float, float]:
    if hi - lo < 1e-12:
        return lo - 0.5 if lo else -1.0, hi + 0.5 if hi else 1.0
    pad = (hi - lo) * 0.08
    return lo - pad, hi + pad
