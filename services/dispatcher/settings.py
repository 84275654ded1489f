"""Settings of the dispatcher deployable (``python -m services.dispatcher``)."""

from __future__ import annotations

import functools
from importlib.machinery import PathFinder
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from services.store.settings import StoreSettings

#: The file a stand-in job's package carries: ``TRAINFORGE_DISPATCHER_LOCAL_MODULE`` names
#: nothing else. trainforge's own packages have none (a test suite's stand-in ships in no
#: package or image).
STAND_IN_MARKER = "standin-job"


def is_stand_in(module: str) -> bool:
    """Whether ``module`` is a package that declares itself a stand-in job (its folder holds
    :data:`STAND_IN_MARKER`).

    Found on ``sys.path`` one dotted part at a time without importing anything: a value that
    is refused runs no code.
    """
    search: list[str] | None = None
    for part in module.split("."):
        if not part.isidentifier():
            return False
        spec = PathFinder.find_spec(part, search)
        if spec is None or spec.submodule_search_locations is None:
            return False  # missing, or a plain module rather than a package
        search = list(spec.submodule_search_locations)
    return any((Path(folder) / STAND_IN_MARKER).is_file() for folder in search or ())


class DispatcherSettings(StoreSettings):
    """Read from TRAINFORGE_* environment variables (docs/configuration.md)."""

    api_url: str = Field(
        "http://127.0.0.1:8000", description="API base URL that launched jobs report to"
    )
    dispatcher_backend: Literal["local", "ray", "kuberay"] = Field(
        "local",
        description=(
            "where jobs run: local subprocesses, a long-lived Ray cluster's Jobs API "
            "(TRAINFORGE_RAY_ADDRESS), or one KubeRay RayJob per attempt"
        ),
    )
    ray_address: str | None = Field(
        None, description="Jobs API URL of the Ray cluster for the ray backend (http://head:8265)"
    )
    dispatcher_metrics_port: int = Field(9100, ge=0, le=65535)
    dispatcher_metrics_host: str = "0.0.0.0"
    dispatcher_poll_interval_s: float = Field(2.0, gt=0, le=300)
    dispatcher_batch_size: int = Field(8, ge=1, le=1000, description="jobs claimed per loop")
    dispatcher_max_active: int | None = Field(
        None, ge=1, description="most jobs launched at once (default: unlimited)"
    )
    dispatcher_launch_grace_s: float = Field(
        60.0, gt=0, description="before this instance re-launches its own unrecorded launch"
    )
    dispatcher_retry_delay_s: float = Field(10.0, ge=0, description="wait before a retry")
    dispatcher_state_dir: Path | None = Field(
        None, description="LocalBackend state; default $TRAINFORGE_HOME/dispatcher"
    )
    dispatcher_local_module: str | None = Field(
        None, description="LocalBackend: run a test suite's stand-in job (a package that "
        f"holds a {STAND_IN_MARKER} file) instead of jobs.<kind>; nothing else is accepted"
    )
    dispatcher_warm_ray: bool = Field(
        True,
        description="trainforge serve: keep one local Ray head for the local backend's jobs "
        "(started with the first job); false: each job starts a Ray of its own",
    )
    migrate_on_startup: bool = True
    webhook_timeout_s: float = Field(
        10.0, gt=0, le=30, description="one webhook attempt, connection to answer, at most"
    )
    webhook_max_response_bytes: int = Field(
        65536, ge=0, le=1024 * 1024, description="most bytes of a receiver's answer read"
    )
    webhook_max_attempts: int = Field(
        40, ge=1, le=1000, description="attempts of one delivery; after the last failed one "
        "the subscription is disabled (the defaults retry for about 31 hours, at least 25)",
    )
    webhook_retry_base_s: float = Field(10.0, gt=0, description="wait after a first failure")
    webhook_retry_max_s: float = Field(
        3600.0, gt=0, description="longest wait between two attempts (the wait doubles up to it)"
    )
    webhook_concurrency: int = Field(8, ge=1, le=64, description="deliveries sent at once")
    webhook_poll_interval_s: float = Field(
        1.0, gt=0, le=60, description="how often the relay looks for events and due deliveries"
    )
    webhook_confirm_grace_s: float = Field(
        300.0, gt=0, description="before an alias move the API recorded but never confirmed "
        "(it died) is settled from the alias log",
    )
    webhook_retention_days: float = Field(
        14.0, gt=0, description="how long delivered events and their deliveries are kept"
    )
    webhook_ca_bundle: Path | None = Field(
        None, description="PEM file of the CAs webhook receivers' certificates may chain to "
        "(default: the system's)",
    )

    @field_validator("dispatcher_local_module")
    @classmethod
    def _only_the_test_stand_in(cls, value: str | None) -> str | None:
        # Whatever module this names runs as every job, with the job's token and data: only a
        # test suite's stand-in (which ships in no package or image) may replace jobs.<kind>.
        if value is not None and not is_stand_in(value):
            raise ValueError(f"{value!r} is not a job module trainforge runs; jobs run as "
                             "jobs.<kind>, and only a test suite's stand-in job (a package "
                             f"with a {STAND_IN_MARKER} file) may replace them")
        return value

    @property
    def resolved_state_dir(self) -> Path:
        return self.dispatcher_state_dir or self.home / "dispatcher"


@functools.cache
def get_settings() -> DispatcherSettings:
    """The process's settings, read once from the environment."""
    return DispatcherSettings()
