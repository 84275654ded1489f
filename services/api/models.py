"""The team's model registry through the API (trainforge.lifecycle does the work).

Every call reads the caller team's registry root only: another team's model, version or alias
is the same 404 as a missing one.
"""

from __future__ import annotations

from typing import Any

from services.api.schemas import (
    AliasMoveOut,
    CompareRequest,
    Comparison,
    ModelDetail,
    ModelList,
    ModelVersionDetail,
    PromoteRequest,
)
from services.api.state import AppState
from services.store import outbox
from trainforge import lifecycle
from trainforge.access import check_alias_name
from trainforge.aliases import AliasMove
from trainforge.errors import AliasConflict, NotFound
from trainforge.registry import ModelNotFound


def list_models(state: AppState, team: str) -> ModelList:
    items = lifecycle.models(state.settings.team_models_uri(team))
    return ModelList.model_validate({"items": items})


def get_model(state: AppState, team: str, name: str) -> ModelDetail:
    try:
        return ModelDetail.model_validate(
            lifecycle.overview(state.settings.team_models_uri(team), name))
    except ModelNotFound:
        raise NotFound(f"model {name!r} not found") from None


def get_version(state: AppState, team: str, name: str, ref: str) -> ModelVersionDetail:
    """One version by id, alias or ``latest``, resolved once (``version`` says to what).

    Raises:
        NotFound: no such model, version or alias (404).
    """
    try:
        return ModelVersionDetail.model_validate(
            lifecycle.version_detail(state.settings.team_models_uri(team), name, ref))
    except ModelNotFound as exc:
        raise NotFound(exc.message) from None


def promote(state: AppState, team: str, name: str, alias: str,
            body: PromoteRequest) -> AliasMoveOut:
    """Point ``alias`` at ``body.version``, with its ``alias.moved`` webhook event.

    The alias lives in the object store, which cannot share the database's transaction: the
    event is recorded unconfirmed before the write and confirmed after it
    (services/store/outbox.py); if this process dies in between, the dispatcher settles it
    from the alias log.

    Raises:
        NotFound: no such model or version (404).
        LocationInvalid: not an alias name (422).
        AliasConflict: ``expected_version`` does not hold, or a concurrent move won (409).
    """
    check_alias_name(alias, field="alias")
    reason = body.reason or "moved through the API"
    intents: list[dict[str, Any]] = []
    try:
        move = lifecycle.promote(state.settings.team_models_uri(team), name, body.version, alias,
                                 actor=f"team {team} (API)", reason=reason,
                                 expected_version=body.expected_version,
                                 before_write=lambda record: intents.append(
                                     record_alias_intent(state, team, record)))
    except ModelNotFound as exc:
        raise NotFound(exc.message) from None
    except AliasConflict:
        # The conditional write refused: this move certainly did not happen.
        with state.db.transaction() as session:
            for intent in intents:
                outbox.abandon_alias_move(session, team, intent)
        raise
    with state.db.transaction() as session:
        outbox.confirm_alias_move(session, team, move.to_json())
    return AliasMoveOut.model_validate(move.to_json())


def record_alias_intent(state: AppState, team: str, record: AliasMove) -> dict[str, Any]:
    """Record, committed, the ``alias.moved`` event of a move about to be written."""
    move = record.to_json()
    with state.db.transaction() as session:
        outbox.begin_alias_move(session, team, move)
    return move


def compare(state: AppState, team: str, name: str, body: CompareRequest) -> Comparison:
    try:
        return Comparison.model_validate(lifecycle.stored_comparison(
            state.settings.team_models_uri(team), name, body.challenger, body.champion,
            body.policy))
    except ModelNotFound as exc:
        raise NotFound(exc.message) from None
