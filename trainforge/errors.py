"""The one exception hierarchy of the shared kernel.

Every exception carries a stable machine-readable ``code`` (used by the API's problem+json
mapping and by job failure records) and a message that says what to change. They are plain
``Exception`` subclasses with only string state, so they survive pickling across Ray tasks.
"""

from __future__ import annotations


class TrainforgeError(Exception):
    """Base of every trainforge error."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self) -> tuple[type[TrainforgeError], tuple[str]]:
        return (type(self), (self.message,))


class SpecError(TrainforgeError):
    """A job spec does not validate."""

    code = "spec_invalid"


class SpecTampered(SpecError):
    """spec.json in the artifacts store is not the spec the API accepted (its sha256 differs)."""

    code = "spec_tampered"


class StorageError(TrainforgeError):
    """An object-store operation failed."""

    code = "storage_error"


class ObjectNotFound(StorageError):
    code = "object_not_found"


class BucketNotFound(StorageError):
    code = "bucket_not_found"


class StorageAccessDenied(StorageError):
    code = "storage_access_denied"


class StorageCredentialsMissing(StorageError):
    code = "storage_credentials_missing"


class ObjectExists(StorageError):
    """A conditional create found the object already there."""

    code = "object_exists"


class DatasetError(TrainforgeError):
    """A dataset cannot be read or does not validate."""

    code = "dataset_invalid"


class DatasetNotFound(DatasetError):
    """Nothing is at the dataset URI (missing directory, empty S3 prefix)."""

    code = "dataset_not_found"


class DatasetUnsafe(DatasetError):
    """A dataset names files outside its root (symlink escape, ``..`` in an object key)."""

    code = "dataset_unsafe"


class DatasetIntegrityError(DatasetError):
    """A synced file does not match the checksum its source advertised."""

    code = "dataset_integrity"


class DatasetExists(DatasetError):
    """A command would overwrite an existing dataset directory."""

    code = "dataset_exists"


class LocationInvalid(SpecError):
    """A storage location is spelled so that its meaning could differ between readers
    (``..``, ``//``, percent-encoding, control characters, a relative path…)."""

    code = "location_invalid"


class AccessDenied(TrainforgeError):
    """The storage access policy does not let the team read a location (trainforge/access.py).

    The message names the prefixes that would be allowed, never what exists elsewhere.
    """

    code = "access_denied"


class WeightsError(TrainforgeError):
    """Base weights could not be resolved."""

    code = "weights_unavailable"


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


class Unauthenticated(TrainforgeError):
    """No bearer token, a malformed one, or one that is unknown or revoked."""

    code = "unauthenticated"


class JobStateConflict(TrainforgeError):
    """The request does not fit the job's current state (e.g. cancelling a finished job)."""

    code = "job_state_conflict"


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


class LimitExceeded(TrainforgeError):
    """A job asks for more than its team may ever use (GPUs per job, sweep trials)."""

    code = "limit_exceeded"


class InvalidRequest(TrainforgeError):
    """A request parameter is malformed (a cursor, a header) and says which one."""

    code = "invalid_request"


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
    code = "kubernetes_not_found"


class KubernetesAlreadyExists(KubernetesApiError):
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
