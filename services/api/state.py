"""What every request needs (settings, database, artifacts store), kept on ``app.state``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request

from services.api.settings import ApiSettings
from services.api.token_cache import TokenCache
from services.store.db import Database
from trainforge.access import AccessRules
from trainforge.preflight import LocalMachine
from trainforge.storage import ObjectStore, join_key, open_location

#: Teams whose access rules are kept (:meth:`AppState.access_for`); past it, the cache starts
#: over (rare: one entry per team that submitted through this process).
_ACCESS_CACHE_MAX = 4096


@dataclass
class AppState:
    settings: ApiSettings
    db: Database
    artifacts: ObjectStore
    #: Key prefix of the artifacts URI inside ``artifacts`` ("" for a bucket root).
    artifacts_prefix: str
    secret_key: bytes
    token_cache: TokenCache = field(repr=False)
    #: The machine jobs run on when it is this one (embedded): submissions are checked
    #: against its files (services/store/submission.py check_job_inputs).
    machine: LocalMachine | None = None
    #: Wakes a dispatcher that runs in this process (``trainforge serve``) when a cancel is
    #: requested, so that it stops the run now instead of at its next loop; None elsewhere.
    wake_dispatcher: Callable[[], None] | None = field(default=None, repr=False)
    _access: dict[str, AccessRules] = field(default_factory=dict, repr=False)

    @classmethod
    def from_settings(cls, settings: ApiSettings, *,
                      wake_dispatcher: Callable[[], None] | None = None) -> AppState:
        store, prefix = open_location(settings.resolved_artifacts_uri + "/")
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url, pool_size=settings.db_pool_size),
            artifacts=store,
            artifacts_prefix=prefix,
            secret_key=settings.secret_key_bytes(),
            token_cache=TokenCache(settings.token_cache_s),
            machine=settings.local_machine(),
            wake_dispatcher=wake_dispatcher,
        )

    def access_for(self, team: str) -> AccessRules:
        """``settings.access_for(team)``, built once per team.

        Building the rules resolves trainforge's own store locations through symlinks
        (realpath: file system calls) on every call; the settings a process serves with do not
        change, so neither do the rules.
        """
        rules = self._access.get(team)
        if rules is None:
            if len(self._access) >= _ACCESS_CACHE_MAX:
                self._access.clear()
            rules = self._access[team] = self.settings.access_for(team)
        return rules

    def key(self, relative: str) -> str:
        """A layout key (trainforge/layout.py) inside the artifacts location."""
        return join_key(self.artifacts_prefix, relative)


async def get_state(request: Request) -> AppState:
    """FastAPI dependency: the app's state (async: no thread hop for a dictionary lookup)."""
    state: AppState = request.app.state.trainforge
    return state
