"""The sweep's trial table and its plot, from plain per-trial records (no Ray objects here)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Ultralytics' name of the metric every trial table and plot shows.
MAP50_95 = "metrics/mAP50-95(B)"
PLOT_NAME = "sweep_map50-95.png"


@dataclass(frozen=True)
class TrialRecord:
    """What Tune recorded for one trial: its config, every reported result, its error."""

    trial_id: str
    config: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


@dataclass(frozen=True)
class TrialRow:
    """One line of the trial table."""

    trial_id: str
    config: dict[str, Any]
    status: str  # "finished" (ran to its end or was stopped) or "error"
    epochs_run: int
    best_metric: float | None  # the sweep's metric, best over its epochs
    best_map50_95: float | None
    best_epoch: int | None  # the epoch of best_metric
    stopped_early: bool  # ended before max epochs without an error (scheduler or patience)
    error: str | None
    history: list[tuple[int, float]]  # (epoch, mAP50-95)

    def to_dict(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id, "config": self.config, "status": self.status,
            "epochs_run": self.epochs_run, "best_metric": self.best_metric,
            "best_map50_95": self.best_map50_95, "best_epoch": self.best_epoch,
            "stopped_early": self.stopped_early, "error": self.error,
            "map50_95_per_epoch": [[e, v] for e, v in self.history],
        }


def trial_table(records: Iterable[TrialRecord], *, metric: str,
                max_epochs: int) -> list[TrialRow]:
    """One row per trial, ordered by trial id.

    Args:
        records: every trial of the sweep.
        metric: the sweep's metric (Ultralytics name).
        max_epochs: the epochs a trial runs unless stopped.
    """
    rows = []
    for rec in sorted(records, key=lambda r: r.trial_id):
        by_epoch = _by_epoch(rec.results)
        scores = [(e, r[metric]) for e, r in by_epoch if _finite(r.get(metric))]
        best = max(scores, key=lambda s: s[1]) if scores else None
        history = [(e, float(r[MAP50_95])) for e, r in by_epoch if _finite(r.get(MAP50_95))]
        epochs_run = by_epoch[-1][0] if by_epoch else 0
        rows.append(TrialRow(
            trial_id=rec.trial_id, config=dict(rec.config),
            status="error" if rec.error else "finished",
            epochs_run=epochs_run,
            best_metric=float(best[1]) if best else None,
            best_map50_95=max((v for _, v in history), default=None),
            best_epoch=best[0] if best else None,
            stopped_early=rec.error is None and 0 < epochs_run < max_epochs,
            error=rec.error,
            history=history,
        ))
    return rows


def _by_epoch(results: Sequence[Mapping[str, Any]]) -> list[tuple[int, Mapping[str, Any]]]:
    """Results keyed by epoch, the latest report of an epoch winning.

    A trial restored from a checkpoint older than its last result repeats those epochs.
    """
    latest: dict[int, Mapping[str, Any]] = {}
    for r in results:
        epoch = r.get("epoch")
        if epoch is not None and _finite(epoch):
            latest[int(epoch)] = r
    return sorted(latest.items())


def best_row(rows: Iterable[TrialRow]) -> TrialRow | None:
    """The trial with the highest best_metric (ties: the lower trial id); None if none scored."""
    scored = sorted((r for r in rows if r.best_metric is not None), key=lambda r: r.trial_id)
    # max() keeps the first of equal scores: the lowest trial id.
    return max(scored, key=lambda r: r.best_metric or 0.0) if scored else None


def summary(rows: Sequence[TrialRow], best: TrialRow, *, plan: Mapping[str, Any]) -> dict[str, Any]:
    """The ``sweep`` section of report.json."""
    return {
        **plan,
        "best_trial": best.trial_id,
        "best_config": best.config,
        "trials_total": len(rows),
        "trials_finished": sum(r.status == "finished" for r in rows),
        "trials_stopped_early": sum(r.stopped_early for r in rows),
        "trials_errored": sum(r.status == "error" for r in rows),
        "epochs_total": sum(r.epochs_run for r in rows),
        "plot": PLOT_NAME,
        "trials": [r.to_dict() for r in rows],
    }


def plot(rows: Sequence[TrialRow], dest: Path, *, best: str | None, title: str) -> Path:
    """Draw mAP50-95 per epoch of every trial into a PNG.

    Args:
        rows: the trial table.
        dest: the PNG to write.
        best: the best trial's id (drawn bold).
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=100)
    try:
        for row in rows:
            if not row.history:
                continue
            epochs, values = zip(*row.history, strict=True)
            label = row.trial_id + (" (stopped early)" if row.stopped_early else "") + (
                " (error)" if row.error else "") + (" — best" if row.trial_id == best else "")
            ax.plot(epochs, values, marker="o", markersize=3,
                    linewidth=2.8 if row.trial_id == best else 1.2,
                    alpha=1.0 if row.trial_id == best else 0.75, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mAP50-95 (val)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if any(r.history for r in rows):
            ax.legend(fontsize=7, loc="best", ncol=2 if len(rows) > 12 else 1)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(dest, bbox_inches="tight")
    finally:
        plt.close(fig)
    return dest


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
