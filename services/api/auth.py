"""Bearer-token authentication: team tokens for /v1, per-attempt job tokens for /internal."""

from __future__ import annotations

from typing import Annotated

from anyio import to_thread
from fastapi import Depends, Path, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.api.state import AppState, get_state
from services.store import tokens
from trainforge.errors import Unauthenticated

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="TeamToken",
    description="A team token from `trainforge tokens create --team T` (tf_…).",
)
_job_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="JobToken",
    description="The per-attempt token the dispatcher gives a job (TRAINFORGE_JOB_TOKEN).",
)


async def current_team(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
) -> str:
    """The caller's team (async: a cache hit costs no thread hop; a miss queries in a thread).

    The verified token's SHA-256 is left in ``request.state.token_sha256`` for limits that
    count per token (:func:`token_digest`).

    Raises:
        Unauthenticated: no, malformed, unknown or revoked token.
    """
    if credentials is None:
        raise Unauthenticated(
            "send 'Authorization: Bearer <token>'; create a token with "
            "`trainforge tokens create --team TEAM`"
        )
    digest = tokens.sha256_hex(credentials.credentials)
    team = state.token_cache.get(digest)
    if team is None:
        team = await to_thread.run_sync(_authenticate, state, credentials.credentials)
        state.token_cache.put(digest, team)
    request.state.token_sha256 = digest
    return team


def token_digest(request: Request) -> str:
    """The SHA-256 of the bearer token :func:`current_team` verified for this request.

    Raises:
        Unauthenticated: the route did not authenticate the caller (a programming error,
            refused rather than counted under a shared key).
    """
    digest: str | None = getattr(request.state, "token_sha256", None)
    if digest is None:
        raise Unauthenticated("this route needs 'Authorization: Bearer <token>'")
    return digest


def _authenticate(state: AppState, token: str) -> str:
    with state.db.transaction() as session:
        return tokens.authenticate(session, token).team


async def current_job_attempt(
    state: Annotated[AppState, Depends(get_state)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_job_bearer)],
    job_id: Annotated[str, Path(alias="id", description="job id", max_length=64)],
) -> int:
    """The attempt a job token belongs to (job tokens only open their own job's route).

    Raises:
        Unauthenticated: no token, or not the current attempt's token for this job.
    """
    if credentials is None:
        raise Unauthenticated("send 'Authorization: Bearer <job token>' (TRAINFORGE_JOB_TOKEN)")
    return await to_thread.run_sync(_verify_job_token, state, job_id, credentials.credentials)


def _verify_job_token(state: AppState, job_id: str, token: str) -> int:
    with state.db.transaction() as session:
        return tokens.verify_job_token(session, job_id, token)


Team = Annotated[str, Depends(current_team)]
State = Annotated[AppState, Depends(get_state)]
