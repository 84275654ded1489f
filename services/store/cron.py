"""Cron expressions of schedules: validation and fire times, in the schedule's time zone.

Fire times are computed on the wall clock of the schedule's IANA time zone (croniter over
naive local times) and stored in UTC. Across daylight-saving changes every wall-clock time
fires once:

- a time that a fall-back repeats fires at its first occurrence only;
- a time that a spring-forward skips fires at the same UTC instant it would have had on the old
  offset, i.e. one hour later on the new wall clock (``30 2 * * *`` in Europe/Berlin fires at
  03:30 CEST on the last Sunday of March), and never twice with a real time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

#: Schedules may not fire more often than this (checked on the wall-clock cron).
MIN_INTERVAL = timedelta(minutes=5)
#: Consecutive fire times compared by the minimum-interval check: more than a day's worth at
#: the minimum interval, so every gap a 5-field expression can make (within an hour, between
#: hours, across midnight) is among them.
_INTERVAL_SAMPLE = 600
#: A fixed start for that check, so the answer does not depend on today's date.
_SAMPLE_START = datetime(2000, 1, 1)
#: Wall-clock candidates tried before giving up (only a DST change makes more than one needed).
_MAX_CANDIDATES = 1000
#: Missed fire times counted one by one before the count is reported as "at least".
MAX_MISSED_COUNTED = 100


def check_cron(expression: str) -> str:
    """A valid 5-field cron expression, with its fields separated by single spaces.

    Raises:
        ValueError: not 5 fields, a field croniter refuses, or it fires more often than
            :data:`MIN_INTERVAL` at some point.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(
            f"a cron expression has 5 fields (minute hour day-of-month month day-of-week, e.g. "
            f"'0 3 * * *'), got {len(fields)}"
        )
    normalized = " ".join(fields)
    try:
        times = croniter(normalized, _SAMPLE_START)
        previous = times.get_next(datetime)
        for _ in range(_INTERVAL_SAMPLE):
            current = times.get_next(datetime)
            if current - previous < MIN_INTERVAL:
                raise ValueError(
                    f"{normalized!r} fires {_minutes(current - previous)} apart at times "
                    f"(e.g. {previous:%H:%M} and {current:%H:%M}); a schedule may fire at most "
                    f"once every {_minutes(MIN_INTERVAL)}"
                )
            previous = current
    except (CroniterError, KeyError) as exc:
        # croniter raises KeyError for some malformed ranges.
        raise ValueError(f"{normalized!r} is not a valid cron expression: {exc}") from None
    return normalized


def _minutes(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes} minute" + ("" if minutes == 1 else "s")


def check_timezone(name: str) -> str:
    """An IANA time zone name that this machine knows (tzdata).

    Raises:
        ValueError: unknown or malformed.
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None
    return name


def _utc(wall: datetime, zone: ZoneInfo) -> datetime:
    # fold=0: the first occurrence of a repeated time; for a skipped time, the offset before
    # the change (which lands one hour later on the new wall clock).
    return wall.replace(tzinfo=zone, fold=0).astimezone(UTC)


def next_after(expression: str, timezone: str, after: datetime) -> datetime:
    """The first fire time strictly after ``after`` (aware), in UTC.

    Raises:
        ValueError: no fire time found (an expression that never fires, like ``0 0 31 2 *``).
    """
    zone = ZoneInfo(timezone)
    times = croniter(expression, after.astimezone(zone).replace(tzinfo=None))
    for _ in range(_MAX_CANDIDATES):
        at = _utc(times.get_next(datetime), zone)
        if at > after:
            return at
    raise ValueError(f"{expression!r} has no fire time after {after.isoformat()}")


def latest_due(
    expression: str, timezone: str, due: datetime, now: datetime
) -> tuple[datetime, int]:
    """The fire time to run now, and how many earlier ones were missed.

    ``due`` (a schedule's next fire time, ``<= now``) is run unless later fire times have
    passed too, as after a long dispatcher outage: then only the latest of them runs, and the
    earlier ones count as missed (at most :data:`MAX_MISSED_COUNTED` are counted).
    """
    fire, missed = due, 0
    following = next_after(expression, timezone, fire)
    while following <= now:
        if missed == MAX_MISSED_COUNTED:
            return _latest_at_or_before(expression, timezone, now), missed
        fire, missed = following, missed + 1
        following = next_after(expression, timezone, fire)
    return fire, missed


def _latest_at_or_before(expression: str, timezone: str, now: datetime) -> datetime:
    zone = ZoneInfo(timezone)
    # A minute past now: croniter's get_prev is strictly before its start.
    start = now.astimezone(zone).replace(tzinfo=None) + timedelta(minutes=1)
    times = croniter(expression, start)
    for _ in range(_MAX_CANDIDATES):
        at = _utc(times.get_prev(datetime), zone)
        if at <= now:
            return at
    raise ValueError(f"{expression!r} has no fire time before {now.isoformat()}")
