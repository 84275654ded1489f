"""Idempotency-Key records: the first response to a team's key, stored with the job it created.

A record is written in the job's own transaction (on PostgreSQL by the creation statement,
services/store/creation.py), so a retry finds either the job and its response or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import psycopg
from sqlalchemy import Table, bindparam, insert, select
from sqlalchemy.orm import Session

from services.store.clock import utcnow
from services.store.domain import IdempotentResponse
from services.store.tables import IdempotencyRow


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The first response to a team's Idempotency-Key, stored with the job it created."""

    key: str
    request_sha256: str
    status_code: int
    response: dict[str, Any]


class IdempotencyKeyTaken(Exception):
    """The team's Idempotency-Key already has a record (a retry, or a concurrent duplicate
    that committed first). Nothing was written: replay the record."""


_IDEMPOTENCY = cast(Table, IdempotencyRow.__table__)
#: The columns a lookup returns, in this order, whichever way it is sent.
_COLUMNS = ("job_id", "request_sha256", "status_code", "response")
# Built once with bound parameters: a retry's lookup is on the submission path.
_FIND = select(*(_IDEMPOTENCY.c[name] for name in _COLUMNS)).where(
    _IDEMPOTENCY.c.team == bindparam("team"), _IDEMPOTENCY.c.key == bindparam("key")
)
_INSERT = insert(_IDEMPOTENCY)
# psycopg's own parameter style, for the API's async connections (PostgreSQL only).
_FIND_SQL = (
    f"SELECT {', '.join(_COLUMNS)} FROM idempotency_keys "
    "WHERE team = %(team)s::text AND key = %(key)s::text"
)


def _response(row: Any) -> IdempotentResponse | None:
    if row is None:
        return None
    job_id, request_sha256, status_code, response = row
    return IdempotentResponse(job_id, request_sha256, status_code, dict(response))


def find_idempotent(session: Session, team: str, key: str) -> IdempotentResponse | None:
    """The record of a team's Idempotency-Key, or None when the key is new."""
    return _response(
        session.connection().execute(_FIND, {"team": team, "key": key}).first()
    )


async def find_idempotent_async(
    conn: psycopg.AsyncConnection[Any], team: str, key: str
) -> IdempotentResponse | None:
    """:func:`find_idempotent` on an autocommit async connection (PostgreSQL)."""
    cursor = await conn.execute(_FIND_SQL, {"team": team, "key": key})
    return _response(await cursor.fetchone())


def remember_idempotent(session: Session, team: str, record: IdempotencyRecord,
                        job_id: str) -> None:
    """Store the first response to an Idempotency-Key in the caller's transaction.

    A concurrent duplicate makes the commit (or this flush) fail with an IntegrityError on the
    (team, key) primary key: the caller then reads the winner's record.
    """
    session.connection().execute(
        _INSERT,
        {
            "team": team,
            "key": record.key,
            "request_sha256": record.request_sha256,
            "job_id": job_id,
            "status_code": record.status_code,
            "response": record.response,
            "created_at": utcnow(),
        },
    )
