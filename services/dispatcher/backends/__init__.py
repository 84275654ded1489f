"""Where a job's entrypoint runs. Every backend runs the same command line."""

from services.dispatcher.backends.base import (
    Backend,
    BackendState,
    BackendStatus,
    LaunchRequest,
    entrypoint_command,
)

__all__ = ["Backend", "BackendState", "BackendStatus", "LaunchRequest", "entrypoint_command"]
