"""The one exception hierarchy of the shared kernel.

Every exception carries a stable machine-readable ``code`` (used by the API's problem+json
mapping and by job failure records) and a message that says what to change. They are plain
``Exception`` subclasses with only string state, so they survive pickling across Ray tasks.

Each class also says whether a job that failed with it is worth another attempt
(``retryable``): the dispatcher's set of codes it never retries is computed from these
classes (:func:`non_retryable_codes`), and docs/training.md's table of error codes is checked
against them. Every error a job can fail with is defined here.
"""

from __future__ import annotations

from typing import ClassVar


class TrainforgeError(Exception):
    """Base of every trainforge error."""

    code = "internal"
    #: Whether another attempt of a job that failed with this may succeed. False for refusals
    #: no retry can change (the spec, the data, the weights, the team's rights as they are).
    retryable: ClassVar[bool] = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[TrainforgeError], tuple[str]]:
        return (type(self), (self.message,))


class SpecError(TrainforgeError):
    """A job spec does not validate."""

    code = "spec_invalid"
    retryable = False


class SpecTampered(SpecError):
    """spec.json in the artifacts store is not the spec the API accepted (its sha256 differs)."""

    code = "spec_tampered"


class StorageError(TrainforgeError):
    """An object-store operation failed."""

    code = "storage_error"


class ObjectNotFound(StorageError):
    """No object at that key."""

    code = "object_not_found"


class BucketNotFound(StorageError):
    """The bucket does not exist."""

    code = "bucket_not_found"


class StorageAccessDenied(StorageError):
    """The object store refused the service's credentials for this location."""

    code = "storage_access_denied"


class StorageCredentialsMissing(StorageError):
    """No credentials for the object store were found."""

    code = "storage_credentials_missing"


class ObjectExists(StorageError):
    """A conditional create found the object already there."""

    code = "object_exists"


class DatasetError(TrainforgeError):
    """A dataset cannot be read or does not validate."""

    code = "dataset_invalid"
    retryable = False


class DatasetNotFound(DatasetError):
    """Nothing is at the dataset URI (missing directory, empty S3 prefix)."""

    code = "dataset_not_found"


class DatasetUnsafe(DatasetError):
    """A dataset names files outside its root (symlink escape, ``..`` in an object key)."""

    code = "dataset_unsafe"


class DatasetIntegrityError(DatasetError):
    """A synced file does not match the checksum its source advertised."""

    code = "dataset_integrity"
    retryable = True  # a download that did not match its checksum may be transient


class DatasetExists(DatasetError):
    """A command would overwrite an existing dataset directory."""

    code = "dataset_exists"
    retryable = True  # never a job's failure: kept as it was


class LocationInvalid(SpecError):
    """A storage location is spelled so that its meaning could differ between readers
    (``..``, ``//``, percent-encoding, control characters, a relative path…)."""

    code = "location_invalid"


class AccessDenied(TrainforgeError):
    """The storage access policy does not let the team read a location (trainforge/access.py).

    The message names the prefixes that would be allowed, never what exists elsewhere.
    """

    code = "access_denied"
    retryable = False


class WeightsError(TrainforgeError):
    """Base weights could not be resolved."""

    code = "weights_unavailable"
    retryable = False


class UnsafeWeights(WeightsError):
    """Weights that are not a plain Ultralytics detection checkpoint: they reference globals
    outside the loading allow-list (a pickle that would run code), hold no detection model, or
    carry a model YAML that is not a plain layer list. A retry cannot change the file."""

    code = "weights_unsafe"


class JobNotFound(TrainforgeError):
    """No job with that id is visible to the caller (another team's job is reported the same)."""

    code = "job_not_found"


class NotFound(TrainforgeError):
    """Something other than a job (an attempt's log, an artifact) does not exist."""

    code = "not_found"


class ScheduleNotFound(NotFound):
    """No schedule with that id is visible to the caller (another team's is reported the same)."""

    code = "schedule_not_found"


class WebhookNotFound(NotFound):
    """No webhook subscription with that id is visible to the caller (another team's is
    reported the same)."""

    code = "webhook_not_found"


class Unauthenticated(TrainforgeError):
    """No bearer token, a malformed one, or one that is unknown or revoked."""

    code = "unauthenticated"


class SignInRequired(Unauthenticated):
    """The dashboard has no session for the request: none, expired, forged, or its token was
    revoked (the dashboard then shows its sign-in page)."""

    code = "sign_in_required"


class CsrfRejected(TrainforgeError):
    """A dashboard form that changes something came without the session's CSRF token, or
    from another origin; nothing was changed."""

    code = "csrf_rejected"


class JobStateConflict(TrainforgeError):
    """The request does not fit the job's current state (e.g. cancelling a finished job)."""

    code = "job_state_conflict"


class JobNotResumable(JobStateConflict):
    """The job cannot be resumed: it succeeded, is still active, was resumed already, is not a
    training job, or left no checkpoint; the message says what to do instead."""

    code = "job_not_resumable"


class ScheduleStateConflict(TrainforgeError):
    """The request does not fit the schedule's current state (e.g. running a paused one)."""

    code = "schedule_state_conflict"


class IllegalTransition(JobStateConflict):
    """A state change that trainforge/states.py's ALLOWED_TRANSITIONS does not allow."""

    code = "illegal_transition"


class IdempotencyKeyReused(TrainforgeError):
    """An Idempotency-Key was sent again with a different request body."""

    code = "idempotency_key_reused"


class QuotaExceeded(TrainforgeError):
    """A team is at its limit of active jobs; retry once some finish."""

    code = "quota_exceeded"


class TooManyStreams(QuotaExceeded):
    """A bearer token has ``stream_max_per_token`` streams open already (429)."""

    code = "too_many_streams"
    #: Seconds a client should wait (Retry-After): a slot frees whenever a stream ends.
    retry_after_s = 5


class LimitExceeded(TrainforgeError):
    """A job asks for more than its team may ever use (GPUs per job, sweep trials)."""

    code = "limit_exceeded"


class InvalidRequest(TrainforgeError):
    """A request parameter is malformed (a cursor, a header) and says which one."""

    code = "invalid_request"


class WebhookDestinationRefused(InvalidRequest):
    """A webhook URL trainforge will not call: not https (http only to loopback in embedded
    mode), a host outside TRAINFORGE_WEBHOOK_ALLOWED_HOSTS, or a private, loopback,
    link-local or cloud-metadata address that the operator did not allow."""

    code = "webhook_destination_refused"


class PayloadTooLarge(TrainforgeError):
    """A request body is larger than the API accepts."""

    code = "payload_too_large"


class DownloadLinkInvalid(TrainforgeError):
    """A download link's signature does not match or it has expired."""

    code = "download_link_invalid"


class NotReady(TrainforgeError):
    """A dependency (database, object store) does not answer."""

    code = "not_ready"


class ConfigError(TrainforgeError):
    """Settings are missing or unsafe (e.g. a placeholder secret outside embedded mode)."""

    code = "config_invalid"


class TrainingFailed(TrainforgeError):
    """The training run failed (after the retries the job spec allows)."""

    code = "training_failed"


class RetriesExhausted(TrainforgeError):
    """The job has already trained as many times as its spec allows (``retries`` + 1 runs,
    counting Ray Train's worker restarts and the dispatcher's attempts together)."""

    code = "retries_exhausted"
    retryable = False


class ClusterUnavailable(TrainforgeError):
    """The Ray cluster named by RAY_ADDRESS could not be reached or started."""

    code = "cluster_unavailable"


class BackendError(TrainforgeError):
    """A compute backend could not launch, poll, cancel or read a run."""

    code = "backend_error"


class BackendConfigError(BackendError):
    """A backend's deployment configuration is missing or invalid."""

    code = "backend_config_invalid"


class ResourcesUnavailable(BackendError):
    """A job asks for resources that the configured node pools cannot give it."""

    code = "resources_unavailable"
    retryable = False


class KubernetesApiError(BackendError):
    """The Kubernetes API server refused or failed a request.

    ``status`` is the HTTP status (0 when the server could not be reached) and ``reason`` the
    Kubernetes ``Status.reason`` (``NotFound``, ``AlreadyExists``, ``Forbidden``, ...).
    """

    code = "kubernetes_api_error"

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason

    def __reduce__(self) -> tuple[type[KubernetesApiError], tuple[str, int, str]]:  # type: ignore[override]
        return (type(self), (self.message, self.status, self.reason))


class KubernetesNotFound(KubernetesApiError):
    """The Kubernetes object does not exist."""

    code = "kubernetes_not_found"


class KubernetesAlreadyExists(KubernetesApiError):
    """The Kubernetes object exists already."""

    code = "kubernetes_already_exists"


class ExportError(TrainforgeError):
    """An export job could not convert, evaluate or publish a model."""

    code = "export_failed"


class ExportGateFailed(ExportError):
    """At least one requested format lost too much accuracy and was not published."""

    code = "export_gate_failed"
class HyperparameterMismatch(TrainforgeError):
    """A sweep trial's trainer ran with other hyperparameters than the ones sampled for it."""

    code = "hyperparameter_mismatch"


class SweepFailed(TrainforgeError):
    """No trial of a sweep finished, so there is no model to keep."""

    code = "sweep_failed"


class RegistryError(TrainforgeError):
    """The model registry refused a reference or an operation."""

    code = "registry_error"


class ModelNotFound(RegistryError):
    """No such model, version or alias in the caller team's registry."""

    code = "model_not_found"
    retryable = False


class AliasConflict(RegistryError):
    """The alias moved between reading its head and writing the next record."""

    code = "alias_conflict"


def error_classes() -> list[type[TrainforgeError]]:
    """:class:`TrainforgeError` and every subclass of it, depth first."""
    found: list[type[TrainforgeError]] = []
    pending: list[type[TrainforgeError]] = [TrainforgeError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(reversed(cls.__subclasses__()))
    return found


def non_retryable_codes() -> frozenset[str]:
    """The error codes a job is never retried for (whatever its ``retries``)."""
    return frozenset(cls.code for cls in error_classes() if not cls.retryable)


def code_table() -> str:
    """The Markdown table of error codes in docs/training.md (``make schema`` rewrites it)."""
    rows = {TrainforgeError.code: (True, "an unexpected error: a bug, or a failure trainforge "
                                         "does not classify (the reason holds the exception)")}
    for cls in error_classes():
        if cls.__module__ != __name__:
            continue  # the Python client's own errors (trainforge/client.py) are not codes
        paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
        doc = " ".join(line.strip() for line in paragraph.splitlines()).rstrip(".")
        rows.setdefault(cls.code, (cls.retryable, doc[:1].lower() + doc[1:]))
    lines = ["| code | a job failing with it is retried | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{code}` | {'yes' if retry else '**no**'} | {doc} |"
              for code, (retry, doc) in sorted(rows.items())]
    return "\n".join(lines) + "\n"
