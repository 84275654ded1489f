"""Environment variables that trainforge processes read, named once.

The dispatcher sets the ``JOB_*`` ones when it launches an entrypoint; deployables read the
rest through their settings classes.
"""

from __future__ import annotations

#: Root of the embedded default (SQLite, local object store, caches). Default ~/.trainforge.
ENV_HOME = "TRAINFORGE_HOME"
#: SQLAlchemy URL of the job store (postgresql+psycopg://… in production).
ENV_DATABASE_URL = "TRAINFORGE_DATABASE_URL"
#: Where job specs, logs, checkpoints and run outputs go: s3://bucket/prefix or file:///dir.
ENV_ARTIFACTS_URI = "TRAINFORGE_ARTIFACTS_URI"
#: Where published models go: s3://bucket/prefix or file:///dir.
ENV_MODELS_URI = "TRAINFORGE_MODELS_URI"
#: Endpoint of an S3-compatible store (MinIO, moto, Ceph…); unset means AWS.
ENV_S3_ENDPOINT_URL = "TRAINFORGE_S3_ENDPOINT_URL"
#: Node-local dataset cache, keyed by dataset fingerprint.
ENV_DATASET_CACHE = "TRAINFORGE_DATASET_CACHE"
#: Stock Ultralytics weights by name (yolov8n.pt), looked up before any download; default
#: $TRAINFORGE_HOME/weights. The embedded server refuses an offline stock name not found there.
ENV_WEIGHTS_CACHE = "TRAINFORGE_WEIGHTS_CACHE"
#: Pushgateway address for export metrics (host:port or URL); unset disables pushing.
ENV_PUSHGATEWAY_URL = "TRAINFORGE_PUSHGATEWAY_URL"

#: Set by the dispatcher for a launched job: the API base URL jobs report to.
ENV_API_URL = "TRAINFORGE_API_URL"
#: Set by the dispatcher: the job id.
ENV_JOB_ID = "TRAINFORGE_JOB_ID"
#: Set by the dispatcher: a token valid only for this job's internal event route.
ENV_JOB_TOKEN = "TRAINFORGE_JOB_TOKEN"
#: Set by the dispatcher: the attempt number, starting at 1.
ENV_ATTEMPT = "TRAINFORGE_ATTEMPT"
#: Set by the dispatcher where a backend has no private channel for secrets (Ray Jobs API,
#: KubeRay): the artifacts-store URI of a JSON object holding the job token, readable by the
#: job's own store credentials and never listed as an artifact. Deleted when the attempt ends.
ENV_JOB_SECRETS_URI = "TRAINFORGE_JOB_SECRETS_URI"
#: Set by the dispatcher: the team that owns the job (its registry, its dataset cache).
ENV_JOB_TEAM = "TRAINFORGE_JOB_TEAM"
#: Set by the dispatcher: what the job may read, as JSON (trainforge/access.py AccessRules).
ENV_JOB_ACCESS = "TRAINFORGE_JOB_ACCESS"
#: Set by the dispatcher: the sha256 the API recorded for spec.json; a job refuses another.
ENV_SPEC_SHA256 = "TRAINFORGE_SPEC_SHA256"
#: Per-team storage access policy (JSON) of the API and the dispatcher.
ENV_STORAGE_POLICY = "TRAINFORGE_STORAGE_POLICY"
#: Where webhooks may point (JSON list of hosts and networks) for the API and the dispatcher.
ENV_WEBHOOK_ALLOWED_HOSTS = "TRAINFORGE_WEBHOOK_ALLOWED_HOSTS"

#: Which backend the dispatcher launches jobs on (local | ray | kuberay).
ENV_DISPATCHER_BACKEND = "TRAINFORGE_DISPATCHER_BACKEND"
#: Port of the dispatcher's own /metrics endpoint when it runs as its own process (default 9100).
ENV_DISPATCHER_METRICS_PORT = "TRAINFORGE_DISPATCHER_METRICS_PORT"
#: Path of the KubeRay backend's JSON/YAML configuration (the chart mounts it from a ConfigMap).
ENV_KUBERAY_CONFIG = "TRAINFORGE_KUBERAY_CONFIG"
#: Base URL of the Kubernetes API server, overriding in-cluster discovery (tests, proxies).
ENV_KUBE_API_URL = "TRAINFORGE_KUBE_API_URL"
#: Address of a long-lived Ray cluster's Jobs API (http://head:8265) for the Ray backend.
ENV_RAY_JOBS_ADDRESS = "TRAINFORGE_RAY_ADDRESS"

#: Ultralytics must never try the network in tests and air-gapped clusters.
ENV_YOLO_OFFLINE = "YOLO_OFFLINE"
#: Ultralytics pip-installs missing packages at run time unless this is false; jobs set it false
#: so that a missing runtime (tensorrt, onnxruntime-gpu) is reported instead of fetched.
ENV_YOLO_AUTOINSTALL = "YOLO_AUTOINSTALL"

#: HMAC key of the API and dispatcher (per-job tokens, API-served download links).
ENV_SECRET_KEY = "TRAINFORGE_SECRET_KEY"
#: Team limits (JSON), read by the API and the dispatcher alike (services/store/settings.py).
ENV_DEFAULT_LIMITS = "TRAINFORGE_DEFAULT_LIMITS"
ENV_TEAM_LIMITS = "TRAINFORGE_TEAM_LIMITS"
#: "true" for the one-process embedded default (allows a generated secret key).
ENV_EMBEDDED = "TRAINFORGE_EMBEDDED"
#: Python client / CLI: the API base URL (default: the embedded server, http://127.0.0.1:8000).
ENV_URL = "TRAINFORGE_URL"
#: Python client / CLI: the bearer token (default: $TRAINFORGE_HOME/dev-token).
ENV_TOKEN = "TRAINFORGE_TOKEN"

#: Ray's own variable: the cluster a job connects to (unset: the job starts a local Ray).
ENV_RAY_ADDRESS = "RAY_ADDRESS"
#: "1" when RAY_ADDRESS is the embedded server's own head on this machine
#: (services/dispatcher/local_ray.py): the job adapts to this machine as on a private Ray.
ENV_LOCAL_RAY = "TRAINFORGE_LOCAL_RAY"
#: Ultralytics' settings/fonts directory; a job points it at its own work directory.
ENV_YOLO_CONFIG_DIR = "YOLO_CONFIG_DIR"
#: Ray Tune's warning threshold for frequent experiment-state saves; a sweep saves after every
#: trial checkpoint on purpose (so that a restored sweep loses nothing) and sets it to 0.
ENV_TUNE_SNAPSHOT_WARNING_S = "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S"
#: Ray Train's preemption watcher (an actor per run that polls for node drains); a job on this
#: machine's Ray sets it to 0: one machine has no node to drain (jobs/core/ray_cluster.py).
ENV_RAY_TRAIN_PREEMPTION_WATCHER = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
