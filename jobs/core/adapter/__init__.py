"""The one package that talks to Ultralytics (the train, sweep and export jobs all use it).

Modules: ``environment`` (offline, private settings), ``safety`` (loading weights and labels),
``training`` (the trainer), ``distributed`` (the trainer as a rank of Ray Train's process
group), ``evaluation`` (``YOLO.val``), ``export`` (``YOLO.export``, the latency runner).
Callers import the names below from the package.

* :func:`train_overrides` turns a job spec's typed ``train`` section into trainer arguments,
  key by key from an explicit list: no user dict reaches Ultralytics unchecked.
* :func:`read_effective_hyperparameters` reads back what a trainer really used (its
  ``args.yaml``), so a caller can prove a run matches its spec.
* :class:`TrainingHooks` receives per-epoch metrics and every saved checkpoint through
  Ultralytics' callbacks registry; the trainer itself is not patched (:func:`harden_loading`
  replaces a few of Ultralytics' loading functions, listed there), and it is subclassed in
  one place only: ``distributed`` runs it as one rank of a Ray Train worker group.
* :func:`evaluate` scores weights on one split (per-class AP and the confusion matrix).
* :func:`harden_loading` and :func:`check_weights`: how weights and dataset files are read.

Loading is hardened because a ``.pt`` file is a pickle, and the user chooses ``model.base``
(``file://``, ``s3://``, ``registry://``, a plain path): Ultralytics loads checkpoints with
``torch.load(weights_only=False)``, so a crafted file used to run its own code inside the job
(and could read the job's secrets). :func:`harden_loading` runs in every job process before
Ultralytics loads anything (each function here calls it; Ray Train workers and Ray Tune
trials are processes of their own and call it too):

* ``TORCH_FORCE_WEIGHTS_ONLY_LOAD=1``: torch reads it at every ``torch.load`` and then uses its
  restricted unpickler whatever the caller passed, so Ultralytics' ``weights_only=False``
  is overridden everywhere without patching its loaders one by one.
* an explicit allow-list, :data:`SAFE_GLOBALS` (plus the renames in
  :data:`SAFE_GLOBAL_ALIASES`): the classes a genuine Ultralytics detection checkpoint
  references beyond torch's own tensors and containers, and nothing that can run code
  (no builtins such as ``eval``/``getattr``, no ``os``/``subprocess``/``functools``).
* model YAMLs (a checkpoint carries one, and Ultralytics rebuilds the model from it when it
  fine-tunes) are parsed in Ultralytics' restricted mode: by default it passes the YAML's
  ``activation`` string to ``eval()``, which would run code from a checkpoint that passed the
  allow-list.
* Ultralytics' ``*.cache`` label caches are never read or written: they are pickles
  (``np.load(allow_pickle=True)``) written next to the labels, i.e. into the node's shared
  dataset cache (or the user's own dataset directory), where a planted one would run code in
  every later job on that dataset. Refusing to load one reads as "no cache yet" to Ultralytics,
  which re-scans the label files (a fraction of a second per thousand images).

:func:`check_weights` is the pre-flight a job runs on its base weights before anything else
loads them: a file that references anything outside the allow-list, or that holds no
Ultralytics detection model, fails the job with :class:`~trainforge.errors.UnsafeWeights`
(``weights_unsafe``), naming what it references.

Ultralytics is imported lazily: importing this package costs nothing, and
:func:`prepare_environment` must run before the first ``import ultralytics``.
"""


from jobs.core.adapter import distributed
from jobs.core.adapter.environment import download_stock, prepare_environment, private_settings
from jobs.core.adapter.epochs import EpochResult
from jobs.core.adapter.evaluation import EvalSettings, Evaluation, SettingsChanged, evaluate
from jobs.core.adapter.export import (
    checkpoint_input,
    export,
    inference_backend,
    letterbox,
    ultralytics_version,
)
from jobs.core.adapter.safety import (
    SAFE_GLOBAL_ALIASES,
    SAFE_GLOBALS,
    check_weights,
    harden_loading,
)
from jobs.core.adapter.training import (
    AUGMENT_ARGS,
    TRAIN_ARGS,
    CheckpointInfo,
    RunOutputs,
    TrainingHooks,
    device_for,
    finalize_checkpoint,
    hyperparameter_mismatches,
    read_checkpoint,
    read_effective_hyperparameters,
    resume_overrides,
    set_checkpoint_epochs,
    spec_hyperparameters,
    train,
    train_overrides,
    write_results_csv,
)

__all__ = [
    "AUGMENT_ARGS",
    "SAFE_GLOBALS",
    "SAFE_GLOBAL_ALIASES",
    "TRAIN_ARGS",
    "CheckpointInfo",
    "EpochResult",
    "EvalSettings",
    "Evaluation",
    "RunOutputs",
    "SettingsChanged",
    "TrainingHooks",
    "check_weights",
    "checkpoint_input",
    "device_for",
    "distributed",
    "download_stock",
    "evaluate",
    "export",
    "finalize_checkpoint",
    "harden_loading",
    "hyperparameter_mismatches",
    "inference_backend",
    "letterbox",
    "prepare_environment",
    "private_settings",
    "read_checkpoint",
    "read_effective_hyperparameters",
    "resume_overrides",
    "set_checkpoint_epochs",
    "spec_hyperparameters",
    "train",
    "train_overrides",
    "ultralytics_version",
    "write_results_csv",
]
