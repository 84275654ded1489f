"""The trial table and plot, from what Tune recorded (no training)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from jobs.sweep.results import MAP50_95, TrialRecord, best_row, plot, summary, trial_table

METRIC = MAP50_95


def _results(*values: float, start: int = 1) -> list[dict[str, float]]:
    return [{"epoch": start + i, METRIC: v, "metrics/mAP50(B)": v * 2}
            for i, v in enumerate(values)]


def test_rows_say_what_each_trial_ran_and_reached() -> None:
    records = [
        TrialRecord("b_00001", {"lr0": 0.01}, _results(0.1, 0.3, 0.2)),
        TrialRecord("a_00000", {"lr0": 0.02}, _results(0.05)),  # stopped at the first rung
        TrialRecord("c_00002", {"lr0": 0.5}, [], error="[hyperparameter_mismatch] lr0 differs"),
    ]
    rows = trial_table(records, metric=METRIC, max_epochs=3)
    assert [r.trial_id for r in rows] == ["a_00000", "b_00001", "c_00002"]
    a, b, c = rows
    assert (a.epochs_run, a.stopped_early, a.best_metric, a.status) == (1, True, 0.05, "finished")
    assert (b.epochs_run, b.stopped_early, b.best_metric, b.best_epoch) == (3, False, 0.3, 2)
    assert b.history == [(1, 0.1), (2, 0.3), (3, 0.2)]
    assert (c.status, c.epochs_run, c.stopped_early, c.best_metric) == ("error", 0, False, None)
    assert best_row(rows) is b
    other_metric = trial_table(records, metric="metrics/mAP50(B)", max_epochs=3)
    assert other_metric[1].best_metric == 0.6 and other_metric[1].best_map50_95 == 0.3


def test_epochs_repeated_after_a_restore_count_once_with_the_latest_value() -> None:
    results = _results(0.1, 0.2) + _results(0.25, 0.4, start=2)  # epoch 2 ran twice
    (row,) = trial_table([TrialRecord("t", {}, results)], metric=METRIC, max_epochs=3)
    assert row.epochs_run == 3 and row.history == [(1, 0.1), (2, 0.25), (3, 0.4)]


def test_no_best_when_nothing_scored_and_ties_go_to_the_first_trial() -> None:
    assert best_row(trial_table([TrialRecord("x", {}, error="boom")], metric=METRIC,
                                max_epochs=2)) is None
    tied = trial_table([TrialRecord("t2", {}, _results(0.0)), TrialRecord("t1", {},
                                                                           _results(0.0))],
                       metric=METRIC, max_epochs=1)
    best = best_row(tied)
    assert best is not None and best.trial_id == "t1"


def test_summary_and_plot(tmp_path: Path) -> None:
    rows = trial_table([TrialRecord(f"t{i}", {"lr0": i / 100}, _results(*[i / 10] * (i + 1)))
                        for i in range(4)] + [TrialRecord("t9", {}, error="x")],
                       metric=METRIC, max_epochs=4)
    best = best_row(rows)
    assert best is not None and best.trial_id == "t3"
    report = summary(rows, best, plan={"scheduler": "asha"})
    assert report["scheduler"] == "asha" and report["best_trial"] == "t3"
    assert (report["trials_total"], report["trials_stopped_early"], report["trials_errored"],
            report["epochs_total"]) == (5, 3, 1, 1 + 2 + 3 + 4)
    assert report["trials"][0] == {
        "trial_id": "t0", "config": {"lr0": 0.0}, "status": "finished", "epochs_run": 1,
        "best_metric": 0.0, "best_map50_95": 0.0, "best_epoch": 1, "stopped_early": True,
        "error": None, "map50_95_per_epoch": [[1, 0.0]]}
    png = plot(rows, tmp_path / "p.png", best="t3", title="four trials")
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > 400
