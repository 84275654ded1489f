"""What every request needs (settings, database, artifacts store), kept on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from services.api.settings import ApiSettings
from services.api.token_cache import TokenCache
from services.store.db import Database
from trainforge.storage import ObjectStore, join_key, open_location


@dataclass
class AppState:
    settings: ApiSettings
    db: Database
    artifacts: ObjectStore
    #: Key prefix of the artifacts URI inside ``artifacts`` ("" for a bucket root).
    artifacts_prefix: str
    secret_key: bytes
    token_cache: TokenCache = field(repr=False)

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> AppState:
        store, prefix = open_location(settings.resolved_artifacts_uri + "/")
        return cls(
            settings=settings,
            db=Database(settings.resolved_database_url, pool_size=settings.db_pool_size),
            artifacts=store,
            artifacts_prefix=prefix,
            secret_key=settings.secret_key_bytes(),
            token_cache=TokenCache(settings.token_cache_s),
        )

    def key(self, relative: str) -> str:
        """A layout key (trainforge/layout.py) inside the artifacts location."""
        return join_key(self.artifacts_prefix, relative)


async def get_state(request: Request) -> AppState:
    """FastAPI dependency: the app's state (async: no thread hop for a dictionary lookup)."""
    state: AppState = request.app.state.trainforge
    return state
