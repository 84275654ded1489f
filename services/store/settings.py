"""Settings shared by every deployable that opens the job store (API, dispatcher)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from services.webhooks.destinations import DestinationPolicy
from trainforge.access import AccessRules, StoragePolicy, embedded_policy
from trainforge.errors import ConfigError
from trainforge.preflight import LocalMachine
from trainforge.settings import CommonSettings
from trainforge.weights import offline

log = logging.getLogger(__name__)

#: Values that mean "nobody set this": refused outside the embedded mode.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "placeholder", "dev"})


class DatabaseSettings(CommonSettings):
    """Where the job store is (enough for `trainforge tokens` and `trainforge db`).

    Environment: ``TRAINFORGE_DATABASE_URL``, ``TRAINFORGE_EMBEDDED``.
    """

    embedded: bool = Field(
        False,
        description="one-process default (SQLite, local store); allows a generated secret",
    )
    database_url: SecretStr | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///$TRAINFORGE_HOME/trainforge.db"
    )

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL, with ``postgresql://`` mapped to the installed psycopg 3 driver."""
        if self.database_url is None:
            return f"sqlite:///{self.home.resolve() / 'trainforge.db'}"
        url = self.database_url.get_secret_value()
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url


class TeamLimits(BaseModel):
    """What one team may use. Defaults apply to every team without an entry of its own."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_active_jobs: int = Field(20, ge=0, description="unfinished jobs at once (else 429)")
    max_gpus_per_job: int = Field(8, ge=0, description="GPUs one job may ask for (else 403)")
    max_sweep_trials: int = Field(64, ge=1, description="trials of one sweep (else 403)")
    max_running_jobs: int | None = Field(
        None,
        ge=1,
        description="launched (STARTING/RUNNING/CANCELLING) jobs at once; the dispatcher "
        "leaves the others queued; null: no limit",
    )


class StoreSettings(DatabaseSettings):
    """The job store, the secret its tokens and links derive from, and the team limits every
    job creation checks (the API's submissions, the dispatcher's schedules).

    Environment: ``TRAINFORGE_SECRET_KEY``, ``TRAINFORGE_DEFAULT_LIMITS``,
    ``TRAINFORGE_TEAM_LIMITS`` and ``TRAINFORGE_WEBHOOK_ALLOWED_HOSTS`` besides
    DatabaseSettings'. A placeholder secret is refused at
    startup outside the embedded mode.
    """

    secret_key: SecretStr = Field(
        SecretStr("change-me"),
        description="HMAC key for per-job tokens and API-served download links",
    )
    default_limits: TeamLimits = Field(default_factory=TeamLimits)
    team_limits: dict[str, TeamLimits] = Field(
        default_factory=dict, description='per-team overrides, JSON: {"vision": {...}}'
    )

    storage_policy: StoragePolicy | None = Field(
        None,
        description='which URI prefixes each team may read datasets and base weights from, '
        'JSON: {"default": {...}, "teams": {"vision": {"datasets": [...], "weights": [...]}}}; '
        "unset: nothing, except the embedded team's local paths in embedded mode",
    )

    webhook_allowed_hosts: list[str] = Field(
        default_factory=list,
        description='where webhooks may point, JSON: ["hooks.example.com", "*.corp.example", '
        '"10.20.0.0/16"]; host names restrict the URLs (empty: any public host), networks '
        "admit private addresses in them (docs/operations.md, Webhooks)",
    )

    @field_validator("webhook_allowed_hosts")
    @classmethod
    def _known_host_entries(cls, value: list[str]) -> list[str]:
        DestinationPolicy.parse(value, embedded=False)  # raises for an entry it cannot read
        return value

    def webhook_destinations(self) -> DestinationPolicy:
        """Where this deployment's webhooks may point (services/webhooks/destinations.py)."""
        return DestinationPolicy.parse(self.webhook_allowed_hosts, embedded=self.embedded)

    def limits_for(self, team: str) -> TeamLimits:
        return self.team_limits.get(team, self.default_limits)

    @property
    def effective_storage_policy(self) -> StoragePolicy:
        if self.storage_policy is not None:
            return self.storage_policy
        return embedded_policy() if self.embedded else StoragePolicy()

    def access_for(self, team: str) -> AccessRules:
        """What ``team`` may read (trainforge/access.py): the policy's prefixes, local paths
        only in embedded mode, and never trainforge's own stores."""
        return AccessRules.build(team, self.effective_storage_policy.for_team(team),
                                 local_paths=self.embedded, reserved=self.reserved_locations())

    def local_machine(self) -> LocalMachine | None:
        """The machine jobs run on, when it is this one (embedded mode: the local backend sees
        the server's files, weights cache and network); None in production, where submissions
        are not checked against files the server cannot see (trainforge/preflight.py)."""
        if not self.embedded:
            return None
        return LocalMachine(weights_cache=self.resolved_weights_cache, offline=offline())

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> StoreSettings:
        if not self.embedded and self.secret_key.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "TRAINFORGE_SECRET_KEY is unset or a placeholder; set it to a random value "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`) or run "
                "in embedded mode (TRAINFORGE_EMBEDDED=true)"
            )
        return self

    def secret_key_bytes(self) -> bytes:
        """The HMAC key. In embedded mode a placeholder is replaced by a key kept in
        ``$TRAINFORGE_HOME/secret-key`` (mode 0600), so tokens survive restarts.

        Raises:
            ConfigError: outside embedded mode with a placeholder (normally caught earlier).
        """
        value = self.secret_key.get_secret_value()
        if value not in PLACEHOLDER_SECRETS:
            return value.encode()
        if not self.embedded:
            raise ConfigError("TRAINFORGE_SECRET_KEY is a placeholder outside embedded mode")
        return _home_secret(self.home).encode()


def _home_secret(home: Path) -> str:
    path = home / "secret-key"
    if path.exists():
        return path.read_text().strip()
    home.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    tmp = home / f".secret-key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    try:
        # link() refuses an existing target: two processes starting together agree on the
        # first key written, and nobody ever reads a half-written file.
        os.link(tmp, path)
        log.info("generated an embedded-mode secret key in %s", path)
    except FileExistsError:
        value = path.read_text().strip()
    finally:
        tmp.unlink()
    return value
