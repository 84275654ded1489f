"""Helpers the repositories share: a team's row by public id, and pages of rows."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from services.store.tables import JobRow, ScheduleRow, WebhookRow
from trainforge.errors import TrainforgeError

#: Anything else cannot be a public id (checked before it reaches SQL: e.g. NUL bytes).
ID_PATTERN = re.compile(r"^[0-9a-z][-0-9a-z]{0,39}$")

Owned = TypeVar("Owned", JobRow, ScheduleRow, WebhookRow)
T = TypeVar("T")


def owned_row(
    session: Session,
    table: type[Owned],
    row_id: str,
    team: str | None,
    *,
    lock: bool,
    missing: type[TrainforgeError],
) -> Owned:
    """The row with public id ``row_id``, if ``team`` owns it (any team when None).

    Raises:
        ``missing``: no such row, or another team's: the same answer, so that nothing tells
            a team that another team's id exists.
    """
    what = table.__tablename__.removesuffix("s")
    if not ID_PATTERN.fullmatch(row_id):
        raise missing(f"no {what} {row_id[:64]!r}")
    query = select(table).where(table.id == row_id)
    if team is not None:
        query = query.where(table.team == team)
    if lock:
        query = query.with_for_update()
    row = session.scalars(query).one_or_none()
    if row is None:
        raise missing(f"no {what} {row_id!r}")
    return row


def page(session: Session, query: Select[T], limit: int, key: Callable[[T], int]
         ) -> tuple[list[T], int | None]:
    """Up to ``limit`` rows of ``query`` (already ordered), and the cursor of the next page:
    ``key`` of the last row when there are more, else None."""
    rows: list[T] = list(session.scalars(query.limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (key(rows[-1]) if more and rows else None)
