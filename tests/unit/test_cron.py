"""Schedule fire times: cron validation, the schedule's time zone, DST, missed fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.store import cron

BERLIN = ZoneInfo("Europe/Berlin")


def _fires(expression: str, timezone: str, start: datetime, count: int) -> list[datetime]:
    times, at = [], start
    for _ in range(count):
        at = cron.next_after(expression, timezone, at)
        times.append(at)
    return times


@pytest.mark.parametrize(("expression", "message"), [
    ("0 3 * *", "5 fields"),
    ("0 3 * * * *", "5 fields"),
    ("61 * * * *", "out of range"),
    ("0 0 * * 8", "out of range"),
    ("a b c d e", "not a valid cron expression"),
    ("0 0 31 2 *", "not a valid cron expression"),
    ("*/4 * * * *", "at most once every 5 minutes"),
    # Only the two fire times around midnight are too close.
    ("0,58 0,23 * * *", "2 minutes apart"),
])
def test_invalid_or_too_frequent_expressions_are_refused(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron.check_cron(expression)


def test_valid_expressions_are_normalised() -> None:
    assert cron.check_cron("  */5   * * * 1-5 ") == "*/5 * * * 1-5"
    assert cron.check_cron("0 3 * * *") == "0 3 * * *"


def test_unknown_time_zones_are_refused() -> None:
    assert cron.check_timezone("Europe/Berlin") == "Europe/Berlin"
    for name in ("Mars/Olympus_Mons", "utc", "", "../../etc/passwd"):
        with pytest.raises(ValueError, match="unknown time zone"):
            cron.check_timezone(name)


def test_fire_times_follow_the_schedules_wall_clock_and_are_utc() -> None:
    start = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    fires = _fires("0 3 * * *", "Europe/Berlin", start, 2)
    assert fires == [datetime(2026, 1, 16, 2, 0, tzinfo=UTC),  # 03:00 CET
                     datetime(2026, 1, 17, 2, 0, tzinfo=UTC)]
    assert all(f.tzinfo is UTC for f in fires)


def test_a_daily_schedule_keeps_its_wall_clock_time_across_dst_changes() -> None:
    spring = _fires("0 3 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 2)
    assert [f.astimezone(BERLIN).hour for f in spring] == [3, 3]
    # 03:00 CEST is one hour earlier in UTC than 03:00 CET the day before.
    assert [f.hour for f in spring] == [1, 1]
    assert spring[1] - spring[0] == timedelta(hours=24)
    autumn = _fires("0 3 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 2)
    assert [f.astimezone(BERLIN).hour for f in autumn] == [3, 3]
    assert autumn[0] - datetime(2026, 10, 24, 1, 0, tzinfo=UTC) == timedelta(hours=25)


def test_a_time_skipped_by_spring_forward_fires_once_an_hour_later() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29 (02:00 CET → 03:00 CEST).
    fires = _fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 28, 12, 0, tzinfo=UTC), 2)
    assert [f.astimezone(BERLIN).strftime("%d %H:%M") for f in fires] == ["29 03:30", "30 02:30"]


def test_a_time_repeated_by_fall_back_fires_once() -> None:
    # 02:30 happens twice in Berlin on 2026-10-25 (03:00 CEST → 02:00 CET).
    fires = _fires("30 2 * * *", "Europe/Berlin", datetime(2026, 10, 24, 12, 0, tzinfo=UTC), 2)
    assert fires == [datetime(2026, 10, 25, 0, 30, tzinfo=UTC),  # 02:30 CEST, the first
                     datetime(2026, 10, 26, 1, 30, tzinfo=UTC)]  # 02:30 CET, the next day


def test_fire_times_only_move_forward_through_dst_changes() -> None:
    for start in (datetime(2026, 3, 28, 23, 0, tzinfo=UTC), datetime(2026, 10, 24, 23, 0,
                                                                        tzinfo=UTC)):
        fires = _fires("*/15 * * * *", "Europe/Berlin", start, 24)
        assert all(b - a >= timedelta(minutes=15) for a, b in zip(fires, fires[1:], strict=False))


def test_only_the_latest_missed_fire_time_runs() -> None:
    due = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    assert cron.latest_due("*/5 * * * *", "UTC", due, due + timedelta(minutes=4)) == (due, 0)
    fire, missed = cron.latest_due("*/5 * * * *", "UTC", due, due + timedelta(minutes=62))
    assert (fire, missed) == (due + timedelta(minutes=60), 12)
    # A long outage: the count stops, the fire time is still the latest one.
    fire, missed = cron.latest_due("*/5 * * * *", "UTC", due, due + timedelta(days=30, minutes=7))
    assert fire == due + timedelta(days=30, minutes=5)
    assert missed == cron.MAX_MISSED_COUNTED
