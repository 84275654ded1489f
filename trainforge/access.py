"""The storage access policy: which locations a team's jobs may read data and weights from.

Jobs read ``dataset.uri`` and ``model.base`` with the service's own credentials, so the
service, not the bucket, must decide what a team may name; otherwise any team could point a
job, a schedule or a dataset validation at another team's data or at trainforge's own stores
and learn from the report, the logs or the trained model (a confused deputy).

The rules, applied at every entry (job submission, schedule create/update and each fire,
``POST /v1/datasets/validate``) and again inside the job before it reads anything:

1. A location is normalised before it is compared, and refused when that is ambiguous:
   control characters, line separators and bidirectional controls (trainforge/text.py),
   percent-encoding, backslashes, ``?``/``#``, empty (``//``), ``.`` or
   ``..`` segments, S3 bucket names that are not exactly a valid lowercase bucket name,
   ``file://host/…`` and relative paths (:func:`check_location_syntax`). Local paths are
   then resolved through symlinks (:func:`normalise`), so a link cannot leave an allowed tree.
2. trainforge's own stores (artifacts, models, the dataset cache and ``$TRAINFORGE_HOME``) are
   never readable through a raw URI; ``registry://NAME@VERSION`` is the one door to models,
   and it only opens the caller team's own registry (:func:`team_models_uri`).
3. ``file://`` URIs and local paths are refused outside the embedded mode.
4. Otherwise the location must lie under one of the team's allowed prefixes (per team, with a
   default for teams not listed; no prefix means no access). Prefixes always end in ``/``, so
   ``s3://datasets/vision/`` never admits ``s3://datasets/vision-secret/``.

Refusals name the prefixes that would be allowed and never say whether anything exists at the
refused location.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

from trainforge.errors import AccessDenied, LocationInvalid
from trainforge.text import check_text

__all__ = [
    "ALIAS_NAME",
    "EMBEDDED_TEAM",
    "REGISTRY_SCHEME",
    "TEAM_NAME",
    "check_alias_name",
    "AccessRules",
    "StoragePolicy",
    "TeamAccess",
    "check_location_syntax",
    "embedded_policy",
    "normalise",
    "parse_registry_ref",
    "reads_storage",
    "team_models_uri",
]

#: The one team of the embedded default (`trainforge serve` mints its dev token for it; a job
#: run by hand publishes into its registry).
EMBEDDED_TEAM = "dev"

#: S3 bucket names: lowercase letters, digits, '.' and '-', at most 63 characters.
_BUCKET = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
_MODEL_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
#: Team names are DNS labels too (services/store/tokens.py refuses others).
TEAM_NAME = _MODEL_NAME
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: A stock Ultralytics asset (yolov8n.pt) or a built-in model YAML (yolov8n.yaml): a bare name.
_STOCK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.(pt|ya?ml)$")
REGISTRY_SCHEME = "registry://"
#: Alias names (``champion``, ``staging``): they share the ``@…`` slot with versions, so the
#: shapes of job ids (``j`` + 26 base32 characters, ``local-…``) and ``latest`` are refused.
ALIAS_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
_JOB_ID_SHAPED = re.compile(r"^(j[0-9a-z]{26}|local-.*)$")

Purpose = Literal["dataset", "weights"]


def check_location_syntax(uri: str, *, field: str = "uri") -> str:
    """Refuse a storage location whose meaning could differ between readers.

    Pure string checks, no I/O (the job-spec validators call it).

    Args:
        uri: ``s3://bucket/key``, ``file:///abs/path`` or an absolute local path.
        field: the name used in messages (``dataset.uri``, ``model.base``).

    Returns:
        The location in its one spelling: ``s3://bucket/key`` or ``file:///abs/path``
        (local paths not yet resolved through symlinks; a trailing slash is kept).

    Raises:
        LocationInvalid: with what to change.
    """
    try:
        check_text(uri)  # control, line-separator and bidirectional characters, with position
    except ValueError as exc:
        raise LocationInvalid(f"{field}: {exc}") from None
    if not uri.strip() or uri != uri.strip():
        raise LocationInvalid(f"{field}: must not be empty or start or end with whitespace")
    for char, what in (("%", "percent-encoded characters (write the characters themselves)"),
                       ("\\", "backslashes (use '/')"), ("?", "'?' (no query strings)"),
                       ("#", "'#' (no fragments)")):
        if char in uri:
            raise LocationInvalid(f"{field}: {what} are not allowed in a storage location")
    if uri.startswith("s3://"):
        bucket, _, key = uri[len("s3://"):].partition("/")
        if not _BUCKET.fullmatch(bucket) or ".." in bucket:
            raise LocationInvalid(
                f"{field}: {bucket!r} is not an S3 bucket name (lowercase letters, digits, '.' "
                "and '-'); write s3://BUCKET/prefix/")
        _check_segments(key, field)
        return f"s3://{bucket}/{key}"
    if uri.startswith("file://"):
        path = uri[len("file://"):]
        if not path.startswith("/"):
            raise LocationInvalid(f"{field}: file:// URIs need an absolute path and no host "
                                  "(file:///abs/dir/)")
        _check_segments(path[1:], field)
        return "file://" + path
    if "://" in uri:
        raise LocationInvalid(f"{field}: unsupported scheme; use s3:// (or file:// on the "
                              "embedded server)")
    if not uri.startswith("/"):
        raise LocationInvalid(f"{field}: a local path must be absolute (or use s3://)")
    _check_segments(uri[1:], field)
    return "file://" + uri


def _check_segments(key: str, field: str) -> None:
    segments = key.split("/")
    if key.endswith("/"):
        segments.pop()
    if key and any(s in ("", ".", "..") for s in segments):
        raise LocationInvalid(f"{field}: empty ('//'), '.' and '..' path segments are not "
                              "allowed; write the location without them")


def normalise(uri: str, *, field: str = "uri") -> str:
    """:func:`check_location_syntax`, then local paths resolved through symlinks.

    Raises:
        LocationInvalid: see :func:`check_location_syntax`.
    """
    spelled = check_location_syntax(uri, field=field)
    if not spelled.startswith("file://"):
        return spelled
    path = spelled[len("file://"):]
    real = os.path.realpath(path)
    if path.endswith("/") and not real.endswith("/"):
        real += "/"
    return "file://" + real


def _within(location: str, prefix: str) -> bool:
    """Whether a normalised location is ``prefix`` itself or lies under it (prefix ends in /)."""
    return (location if location.endswith("/") else location + "/").startswith(prefix)


def _prefix(uri: str) -> str:
    location = normalise(uri, field="prefix")
    return location if location.endswith("/") else location + "/"


def is_local(location: str) -> bool:
    return location.startswith("file://")


def parse_registry_ref(ref: str, *, field: str = "model.base") -> tuple[str, str]:
    """``registry://NAME[@VERSION]`` → (name, version); the version defaults to ``latest``.

    Raises:
        LocationInvalid: the name is not a model name or the version not a version id.
    """
    name, _, version = ref[len(REGISTRY_SCHEME):].partition("@")
    version = version or "latest"
    if not _MODEL_NAME.fullmatch(name):
        raise LocationInvalid(f"{field}: {name!r} is not a model name (a DNS label); write "
                              "registry://NAME@VERSION")
    if not _VERSION.fullmatch(version):
        raise LocationInvalid(f"{field}: {version!r} is not a version (a job id, an alias such as "
                              "champion, or latest)")
    return name, version


def check_alias_name(alias: str, *, field: str = "alias") -> str:
    """Refuse an alias name that is not a lowercase word or could be read as a version.

    Raises:
        LocationInvalid: with a message naming the rule.
    """
    if not ALIAS_NAME.fullmatch(alias):
        raise LocationInvalid(f"{field}: {alias!r} is not an alias name (a lowercase letter, "
                              "then up to 30 lowercase letters, digits or '-')")
    if alias == "latest" or _JOB_ID_SHAPED.fullmatch(alias):
        raise LocationInvalid(f"{field}: {alias!r} reads as a version; pick another alias name")
    return alias


def reads_storage(base: str) -> bool:
    """Whether ``model.base`` names a storage location (s3://, file://, a local path), as
    opposed to a stock name, a built-in model YAML or a ``registry://`` reference.

    Raises:
        LocationInvalid: a malformed registry reference, stock name or location.
    """
    if base.startswith(REGISTRY_SCHEME):
        parse_registry_ref(base)
        return False
    if "://" not in base and "/" not in base:
        if not _STOCK_NAME.fullmatch(base):
            raise LocationInvalid(f"model.base: {base!r} is not a stock name such as "
                                  "yolov8n.pt or yolov8n.yaml")
        return False
    check_location_syntax(base, field="model.base")
    return True


def team_models_uri(models_uri: str, team: str) -> str:
    """The root of one team's registry inside the models store: ``<models>/<team>``.

    Every registry read and publication of a job goes through this root, so a team can only
    ever name its own models.
    """
    return f"{models_uri.rstrip('/')}/{team}"


class TeamAccess(BaseModel):
    """The URI prefixes one team's jobs may read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    datasets: tuple[str, ...] = Field(
        (), description="prefixes a dataset.uri may lie under, e.g. s3://datasets/vision/")
    weights: tuple[str, ...] = Field(
        (), description="prefixes a model.base URI may lie under (registry:// needs none)")

    @field_validator("datasets", "weights")
    @classmethod
    def _normalised(cls, prefixes: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_prefix(p) for p in prefixes)

    def prefixes(self, purpose: Purpose) -> tuple[str, ...]:
        return self.datasets if purpose == "dataset" else self.weights


class StoragePolicy(BaseModel):
    """Per-team read access (``TRAINFORGE_STORAGE_POLICY``, Helm value ``config.storagePolicy``).

    ``{"default": {...}, "teams": {"vision": {"datasets": [...], "weights": [...]}}}``; a team
    without an entry gets ``default``, which allows nothing unless configured.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: TeamAccess = Field(default_factory=TeamAccess)
    teams: dict[str, TeamAccess] = Field(default_factory=dict)

    def for_team(self, team: str) -> TeamAccess:
        return self.teams.get(team, self.default)


def embedded_policy() -> StoragePolicy:
    """The embedded default: the local team reads local paths; other teams nothing."""
    local = TeamAccess(datasets=("file:///",), weights=("file:///",))
    return StoragePolicy(teams={EMBEDDED_TEAM: local})


@dataclass(frozen=True)
class AccessRules:
    """What one team may read, and what nobody may: the checks themselves.

    Attributes:
        team: whose rules these are (named in messages).
        access: the team's allowed prefixes.
        local_paths: whether file:// URIs and local paths are readable at all (embedded).
        reserved: trainforge's own locations (``name -> location``), never readable as data.
    """

    team: str
    access: TeamAccess
    local_paths: bool
    reserved: Mapping[str, str]

    @classmethod
    def build(cls, team: str, access: TeamAccess, *, local_paths: bool,
              reserved: Mapping[str, str]) -> Self:
        """Rules with every reserved location normalised (file paths resolved)."""
        return cls(team, access, local_paths,
                   {name: _prefix(uri) for name, uri in reserved.items()})

    def dataset(self, uri: str) -> str:
        """Check ``dataset.uri``; returns its normalised form.

        Raises:
            LocationInvalid: an ambiguous spelling.
            AccessDenied: a reserved location, a local path outside the embedded mode, or
                outside every prefix the team may read.
        """
        return self._check(uri, "dataset", "dataset.uri")

    def weights(self, base: str) -> str | None:
        """Check ``model.base``; returns the normalised location, or None for forms that read
        no storage of the caller's choosing (a stock name, a built-in YAML, ``registry://``,
        which resolves inside the team's own registry only).

        Raises:
            LocationInvalid, AccessDenied: as :meth:`dataset`.
        """
        if not reads_storage(base):
            return None
        return self._check(base, "weights", "model.base")

    def check_spec(self, dataset_uri: str, model_base: str) -> None:
        """Both of a job spec's reads (the dataset first)."""
        self.dataset(dataset_uri)
        self.weights(model_base)

    def _check(self, uri: str, purpose: Purpose, field: str) -> str:
        location = normalise(uri, field=field)
        for name, prefix in self.reserved.items():
            inside = _within(location, prefix)
            if inside or _within(prefix, location.rstrip("/") + "/"):
                hint = (" (to start from a published model, use model.base: "
                        "registry://NAME@VERSION)" if name == "models store" else "")
                where = "lies in" if inside else "includes"
                raise AccessDenied(f"{field}: {uri} {where} trainforge's own {name}, which "
                                   f"jobs never read as {_noun(purpose)}{hint}")
        if is_local(location) and not self.local_paths:
            raise AccessDenied(f"{field}: file:// URIs and local paths are readable only on "
                               "the embedded server; use an s3:// location")
        allowed = self.access.prefixes(purpose)
        if not any(_within(location, prefix) for prefix in allowed):
            where = (f"allowed prefixes: {', '.join(allowed)}" if allowed else
                     f"the storage access policy allows team {self.team!r} no {_noun(purpose)} "
                     "location; ask an operator to add one (TRAINFORGE_STORAGE_POLICY)")
            raise AccessDenied(f"{field}: team {self.team!r} may not read {uri}; {where}")
        return location

    def to_env(self) -> str:
        """JSON for a job's environment (only this team's rules travel with the job)."""
        return json.dumps({
            "team": self.team,
            "access": self.access.model_dump(mode="json"),
            "local_paths": self.local_paths,
        }, sort_keys=True)

    @classmethod
    def from_env(cls, text: str, *, reserved: Mapping[str, str]) -> Self:
        """Rules a job received from the dispatcher (:meth:`to_env`), with its own reserved
        locations (the job knows its stores from its own settings).

        Raises:
            LocationInvalid: the JSON does not describe rules.
        """
        try:
            data = json.loads(text)
            return cls.build(str(data["team"]), TeamAccess.model_validate(data["access"]),
                             local_paths=bool(data["local_paths"]), reserved=reserved)
        except (ValueError, KeyError, TypeError) as exc:
            raise LocationInvalid(f"the job's access rules do not parse: {exc}") from None


def _noun(purpose: Purpose) -> str:
    return "datasets" if purpose == "dataset" else "base weights"
