"""Bearer tokens: team-bound API tokens and per-attempt job tokens, both stored hashed.

An API token reads ``tf_<id>_<secret>``: the id finds the row, and the SHA-256 of the secret
is compared in constant time with the stored one (the secret itself is never stored). Tokens
carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.

A job token (``tfj_…``) is an HMAC of the job id and attempt under the service's secret key:
the dispatcher can mint the same token again after a crash (a relaunch must present the
token the first launch got), and the API only keeps its SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.store.clock import utcnow
from services.store.domain import ApiToken
from services.store.tables import ApiTokenRow, AttemptRow, JobRow
from trainforge.errors import NotFound, Unauthenticated
from trainforge.states import JobState

API_TOKEN_PREFIX = "tf_"
JOB_TOKEN_PREFIX = "tfj_"
TEAM_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
# Compared against when the token id is unknown, so that a miss costs what a hit costs.
_DUMMY_SHA = hashlib.sha256(b"no such token").hexdigest()


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _domain(row: ApiTokenRow) -> ApiToken:
    return ApiToken(row.id, row.team, row.description, row.created_at, row.revoked_at)


def create_token(session: Session, team: str, description: str = "") -> tuple[ApiToken, str]:
    """Mint an API token for ``team``.

    Returns:
        The stored token's record and the plaintext token (shown once, never stored).

    Raises:
        ValueError: ``team`` is not a DNS label (lowercase letters, digits, '-').
    """
    if not TEAM_PATTERN.fullmatch(team):
        raise ValueError(
            f"team {team!r} must be a DNS label: lowercase letters, digits and '-', "
            "1-63 characters, starting and ending with a letter or digit"
        )
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = ApiTokenRow(
        id=token_id,
        team=team,
        secret_sha256=sha256_hex(secret),
        description=description,
        created_at=utcnow(),
        revoked_at=None,
    )
    session.add(row)
    session.flush()
    return _domain(row), f"{API_TOKEN_PREFIX}{token_id}_{secret}"


def _split(presented: str) -> tuple[str, str] | None:
    if not presented.startswith(API_TOKEN_PREFIX):
        return None
    token_id, sep, secret = presented[len(API_TOKEN_PREFIX):].partition("_")
    if not sep or not _ID_PATTERN.fullmatch(token_id) or not secret:
        return None
    return token_id, secret


def authenticate(session: Session, presented: str) -> ApiToken:
    """The live token a bearer string names.

    Raises:
        Unauthenticated: malformed, unknown or revoked (one message for all three).
    """
    parts = _split(presented)
    row = session.get(ApiTokenRow, parts[0]) if parts else None
    stored = row.secret_sha256 if row is not None else _DUMMY_SHA
    given = sha256_hex(parts[1]) if parts else sha256_hex(presented)
    if not hmac.compare_digest(stored, given) or row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked bearer token")
    return _domain(row)


def live_token(session: Session, token_id: str) -> ApiToken:
    """The unrevoked token with this id (a dashboard session names the token it was opened
    with by id; the session's own signature proves the secret was presented then).

    Raises:
        Unauthenticated: unknown or revoked.
    """
    row = session.get(ApiTokenRow, token_id) if _ID_PATTERN.fullmatch(token_id) else None
    if row is None or row.revoked_at is not None:
        raise Unauthenticated("invalid or revoked token")
    return _domain(row)


def revoke_token(session: Session, token: str) -> ApiToken:
    """Revoke by token id or by the full token. Revoking twice is not an error.

    Raises:
        NotFound: no such token.
    """
    parts = _split(token)
    token_id = parts[0] if parts else token
    row = session.get(ApiTokenRow, token_id, with_for_update=True)
    if row is None:
        raise NotFound(f"no token with id {token_id!r}; `trainforge tokens list` shows them")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return _domain(row)


def list_tokens(session: Session, team: str | None = None) -> list[ApiToken]:
    query = select(ApiTokenRow).order_by(ApiTokenRow.created_at)
    if team is not None:
        query = query.where(ApiTokenRow.team == team)
    return [_domain(r) for r in session.scalars(query)]


def job_token(secret_key: bytes, job_id: str, attempt: int) -> str:
    """The token attempt ``attempt`` of ``job_id`` reports with (deterministic, see above)."""
    mac = hmac.new(secret_key, f"job-token:{job_id}:{attempt}".encode(), hashlib.sha256)
    return JOB_TOKEN_PREFIX + mac.hexdigest()


def verify_job_token(session: Session, job_id: str, presented: str) -> int:
    """Check a job token against the job's current attempt, which must still be live.

    A token opens the events route only while its attempt can still be running: not after a
    retry superseded it, not once the dispatcher settled the attempt (its run ended: the job
    is then RETRYING or terminal), and not once the job reached a terminal state, whoever moved
    it there. The job's own last report is therefore accepted: SUCCEEDED arrives while the job
    is RUNNING (or CANCELLING) and is what makes it terminal; a reported FAILED only records
    the error, the job stays RUNNING until the run exits and the dispatcher settles it. Logs
    are not affected: a job ships them to the artifacts store directly, not with this token.

    Returns:
        The attempt number the token belongs to.

    Raises:
        Unauthenticated: not the current attempt's token (or no such job: same answer), or the
            attempt or the job has ended.
    """
    row = session.execute(
        select(AttemptRow.number, AttemptRow.token_sha256, AttemptRow.finished_at, JobRow.state)
        .join(JobRow, JobRow.id == AttemptRow.job_id)
        .where(AttemptRow.job_id == job_id, AttemptRow.number == JobRow.attempts)
    ).one_or_none()
    stored = row.token_sha256 if row is not None else _DUMMY_SHA
    if not hmac.compare_digest(stored, sha256_hex(presented)) or row is None:
        raise Unauthenticated(f"not a valid token for the current attempt of job {job_id}")
    # Said only to a caller that proved it holds the attempt's token.
    if JobState(row.state).terminal:
        raise Unauthenticated(
            f"job {job_id} is {row.state}; its job tokens are no longer valid"
        )
    if row.finished_at is not None:
        raise Unauthenticated(
            f"attempt {row.number} of job {job_id} has ended; its job token is no longer valid"
        )
    return int(row.number)
