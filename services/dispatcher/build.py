"""Build a dispatcher from settings (used by ``python -m services.dispatcher`` and serve)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from datetime import timedelta

from services.dispatcher.backends.base import Backend
from services.dispatcher.backends.local import LocalBackend
from services.dispatcher.dispatcher import Dispatcher, DispatcherConfig
from services.dispatcher.local_ray import LocalRayHead
from services.dispatcher.settings import DispatcherSettings
from services.dispatcher.webhook_relay import RelayConfig, RetryPolicy, WebhookRelay
from services.store.db import Database


def make_backend(settings: DispatcherSettings, *, ray_head: LocalRayHead | None = None
                 ) -> Backend:
    """The backend the settings name.

    Args:
        ray_head: for the local backend, a warm Ray its runs join (``trainforge serve``).

    Raises:
        ValueError: an unknown backend name.
    """
    if settings.dispatcher_backend == "local":
        return LocalBackend(settings.resolved_state_dir, module=settings.dispatcher_local_module,
                            ray_head=ray_head)
    if settings.dispatcher_backend == "ray":
        from services.dispatcher.backends.ray_jobs import RayJobsBackend

        if not settings.ray_address:
            raise ValueError("the ray backend needs TRAINFORGE_RAY_ADDRESS (http://head:8265)")
        return RayJobsBackend(settings.ray_address)
    if settings.dispatcher_backend == "kuberay":
        # Imported here: only the kuberay deployment needs it (config from
        # TRAINFORGE_KUBERAY_CONFIG, API server from the pod's service account).
        from services.dispatcher.backends.kuberay import KubeRayBackend

        return KubeRayBackend.from_env()
    raise ValueError(
        f"unknown dispatcher backend {settings.dispatcher_backend!r}; use local, ray or kuberay"
    )


def make_dispatcher(
    settings: DispatcherSettings,
    db: Database,
    backend: Backend | None = None,
    *,
    fault: Callable[[str], None] | None = None,
) -> Dispatcher:
    """A dispatcher on ``db`` with the backend and limits from ``settings``.

    Args:
        fault: crash-injection hook for tests (see :class:`Dispatcher`).
    """
    config = DispatcherConfig(
        api_url=settings.api_url,
        secret_key=settings.secret_key_bytes(),
        artifacts_uri=settings.resolved_artifacts_uri,
        models_uri=settings.resolved_models_uri,
        s3_endpoint_url=settings.s3_endpoint_url,
        batch_size=settings.dispatcher_batch_size,
        max_active=settings.dispatcher_max_active,
        launch_grace=timedelta(seconds=settings.dispatcher_launch_grace_s),
        retry_delay=timedelta(seconds=settings.dispatcher_retry_delay_s),
        limits_for=settings.limits_for,
        access_for=settings.access_for,
        machine=settings.local_machine(),
    )
    relay = make_relay(settings, db, owner=config.owner)
    return Dispatcher(db, backend or make_backend(settings), config, fault=fault, relay=relay)


def make_relay(settings: DispatcherSettings, db: Database, *, owner: str,
               fault: Callable[[str], None] | None = None) -> WebhookRelay:
    """The webhook relay the settings describe (services/dispatcher/webhook_relay.py).

    Args:
        owner: the dispatcher's id (recorded on the deliveries it claims).
        fault: crash-injection hook for tests (see :class:`WebhookRelay`).
    """
    ssl_context = None
    if settings.webhook_ca_bundle is not None:
        ssl_context = ssl.create_default_context(cafile=str(settings.webhook_ca_bundle))
    config = RelayConfig(
        models_uri=settings.resolved_models_uri,
        secret_key=settings.secret_key_bytes(),
        destinations=settings.webhook_destinations(),
        owner=owner,
        retry=RetryPolicy(base_s=settings.webhook_retry_base_s,
                          max_delay_s=settings.webhook_retry_max_s,
                          max_attempts=settings.webhook_max_attempts),
        timeout_s=settings.webhook_timeout_s,
        max_response_bytes=settings.webhook_max_response_bytes,
        concurrency=settings.webhook_concurrency,
        poll_interval_s=settings.webhook_poll_interval_s,
        confirm_grace=timedelta(seconds=settings.webhook_confirm_grace_s),
        retention=timedelta(days=settings.webhook_retention_days),
        ssl_context=ssl_context,
    )
    return WebhookRelay(db, config, fault=fault)
