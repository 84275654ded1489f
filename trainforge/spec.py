"""The job-spec contract shared by the API, the dispatcher and the job entrypoints.

Every field is typed and bounded; unknown keys are refused (``extra="forbid"``) so that no
user-supplied dict ever reaches Ultralytics unchecked. Hyperparameter names and defaults match
``ultralytics/cfg/default.yaml`` so a reader of the Ultralytics docs recognises them.
"""

from __future__ import annotations

import json
import reprlib
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trainforge import safeyaml
from trainforge.access import check_alias_name, check_location_syntax, reads_storage
from trainforge.errors import LocationInvalid, SpecError
from trainforge.spec_hints import PLACEHOLDER, nested_model, unknown_key_hint
from trainforge.text import SafeText, check_text

__all__ = [
    "Augment",
    "DatasetRef",
    "Domain",
    "ExportFormat",
    "ExportGates",
    "ExportParams",
    "JobKind",
    "JobSpec",
    "ModelRef",
    "PromotePolicy",
    "Resources",
    "SweepParams",
    "TrainParams",
    "TUNABLE_PARAMS",
    "format_validation_error",
    "load_spec",
    "parse_spec",
]

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
MEMORY_PATTERN = r"^[1-9][0-9]*(Mi|Gi|Ti)$"
#: Most training workers (data-parallel ranks) a job, or a sweep trial, may ask for.
MAX_WORKERS = 64
#: Most epochs a job may train (also the most a resumed job may be raised to).
MAX_EPOCHS = 1000


class _Strict(BaseModel):
    """Base for every spec section: unknown keys refused, values immutable once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class JobKind(StrEnum):
    TRAIN = "train"
    SWEEP = "sweep"
    EXPORT = "export"


def _refuse_placeholder(value: str, replace_with: str) -> None:
    """Refuse an example spec's placeholder (``@DATASET_URI@``), saying what goes there.

    Raises:
        ValueError: ``value`` is a placeholder.
    """
    if PLACEHOLDER.fullmatch(value):
        raise ValueError(f"{value} is a placeholder of an example spec: replace it with "
                         f"{replace_with}")


def _short_repr(value: Any) -> str:
    """``repr`` cut to a few entries: a message must not echo a whole request back."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring = 2, 4, 4, 40
    return short.repr(value)


class DatasetRef(_Strict):
    """Where the YOLO dataset lives: a prefix with ``data.yaml`` at its root."""

    uri: str = Field(
        max_length=2048,
        description="s3://bucket/prefix/, or on the embedded server file:///abs/path/ or an "
        "absolute local path; the team's storage access policy decides what it may read",
    )

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        check_text(value)  # it reaches logs, events and the dashboard
        _refuse_placeholder(value, "the dataset's folder, the one with data.yaml: "
                            'dataset: {uri: "file:///abs/path/to/dataset/"} (`trainforge '
                            "dataset synth DIR` prints this line for the dataset it makes) or "
                            "s3://bucket/prefix/")
        if "://" in value and not value.startswith(("s3://", "file://")):
            raise ValueError("dataset.uri must start with s3:// or file:// (or be a local path)")
        try:
            check_location_syntax(value, field="dataset.uri")
        except LocationInvalid as exc:
            raise ValueError(exc.message.removeprefix("dataset.uri: ")) from None
        return value


class ModelRef(_Strict):
    """Base weights to fine-tune (or a model YAML to train from scratch)."""

    base: str = Field(
        default="yolov8n.pt",
        max_length=2048,
        description=(
            "stock Ultralytics name (yolov8n.pt), s3://…/best.pt, file:///…/best.pt, "
            "registry://model-name@version (a model of the caller's team), or a model YAML such "
            "as yolov8n.yaml (from scratch)"
        ),
    )

    @field_validator("base")
    @classmethod
    def _known_form(cls, value: str) -> str:
        check_text(value)
        _refuse_placeholder(value, "yolov8n.yaml (from scratch), a stock name such as "
                            "yolov8n.pt, or registry://model-name@version")
        if "://" in value and not value.startswith(("s3://", "file://", "registry://")):
            raise ValueError("model.base must be a stock name, s3://, file://, or registry:// URI")
        if not value.startswith(("s3://", "file://", "registry://")) and not value.endswith(
            (".pt", ".yaml", ".yml")
        ):
            raise ValueError("a stock model.base ends in .pt (weights) or .yaml (from scratch)")
        try:
            reads_storage(value)
        except LocationInvalid as exc:
            raise ValueError(exc.message.removeprefix("model.base: ")) from None
        return value

    @property
    def from_scratch(self) -> bool:
        return self.base.endswith((".yaml", ".yml"))


class Augment(_Strict):
    """Augmentation gains, as in ultralytics/cfg/default.yaml."""

    hsv_h: float = Field(0.015, ge=0.0, le=1.0)
    hsv_s: float = Field(0.7, ge=0.0, le=1.0)
    hsv_v: float = Field(0.4, ge=0.0, le=1.0)
    degrees: float = Field(0.0, ge=0.0, le=180.0)
    translate: float = Field(0.1, ge=0.0, le=1.0)
    scale: float = Field(0.5, ge=0.0, le=1.0)
    shear: float = Field(0.0, ge=0.0, le=180.0)
    perspective: float = Field(0.0, ge=0.0, le=0.001)
    flipud: float = Field(0.0, ge=0.0, le=1.0)
    fliplr: float = Field(0.5, ge=0.0, le=1.0)
    mosaic: float = Field(1.0, ge=0.0, le=1.0)
    mixup: float = Field(0.0, ge=0.0, le=1.0)
    copy_paste: float = Field(0.0, ge=0.0, le=1.0)
    close_mosaic: int = Field(10, ge=0, le=1000, description="epochs at the end without mosaic")


Imgsz = Annotated[int, Field(ge=32, le=2048, multiple_of=32)]


class TrainParams(_Strict):
    """Training hyperparameters (names, meanings and defaults as in Ultralytics)."""

    epochs: int = Field(100, ge=1, le=MAX_EPOCHS)
    imgsz: Imgsz = 640
    batch: int = Field(16, ge=1, le=1024)
    patience: int = Field(100, ge=0, le=1000, description="early stop after N epochs w/o gain")
    optimizer: Literal["SGD", "Adam", "AdamW", "NAdam", "RAdam", "RMSProp", "auto"] = "auto"
    lr0: float = Field(0.01, gt=0.0, le=1.0)
    lrf: float = Field(0.01, gt=0.0, le=1.0)
    momentum: float = Field(0.937, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0005, ge=0.0, le=0.1)
    warmup_epochs: float = Field(3.0, ge=0.0, le=100.0)
    warmup_momentum: float = Field(0.8, ge=0.0, lt=1.0)
    warmup_bias_lr: float = Field(0.1, ge=0.0, le=1.0)
    box: float = Field(7.5, gt=0.0, le=100.0)
    cls: float = Field(0.5, gt=0.0, le=100.0)
    dfl: float = Field(1.5, gt=0.0, le=100.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    cos_lr: bool = False
    seed: int = Field(0, ge=0, le=2**31 - 1)
    deterministic: bool = True
    single_cls: bool = False
    rect: bool = False
    fraction: float = Field(1.0, gt=0.0, le=1.0)
    freeze: int | None = Field(None, ge=0, le=100, description="freeze the first N layers")
    cache: Literal[False, "ram", "disk"] = False
    amp: bool = True
    workers: int = Field(8, ge=0, le=64)
    nbs: int = Field(64, ge=1, le=1024)
    plots: bool = Field(
        True, description="draw Ultralytics' plots (labels, training batches, results, PR "
        "curves, confusion matrices) and publish them with the run; off saves their drawing "
        "time, which on a small CPU job is as long as the training")
    augment: Augment = Field(default_factory=Augment)


#: Hyperparameters a sweep may search over: the numeric/choice fields of TrainParams and Augment.
TUNABLE_PARAMS: frozenset[str] = frozenset(
    {
        name
        for model in (TrainParams, Augment)
        for name, field in model.model_fields.items()
        if field.annotation in (int, float, bool) or name in {"optimizer", "batch", "imgsz"}
    }
    - {"epochs", "seed", "workers", "deterministic", "amp", "single_cls", "rect", "plots"}
)


class Domain(_Strict):
    """One dimension of a search space: exactly one of the four forms."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[float | int | SafeText | bool] | None = Field(None, min_length=1,
                                                                max_length=64)

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform, loguniform, randint, choice "
                f"(got {', '.join(given) or 'none'})"
            )
        for key in ("uniform", "loguniform", "randint"):
            bounds = getattr(self, key)
            if bounds is not None and not bounds[0] < bounds[1]:
                raise ValueError(f"{key} bounds must be [low, high] with low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be > 0")
        return self


class SweepParams(_Strict):
    """A Ray Tune sweep over TrainParams."""

    trials: int = Field(8, ge=1, le=256)
    searcher: Literal["random", "optuna"] = "random"
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: Literal[
        "metrics/mAP50-95(B)", "metrics/mAP50(B)", "metrics/precision(B)", "metrics/recall(B)"
    ] = "metrics/mAP50-95(B)"
    grace_period: int = Field(1, ge=1, le=1000, description="ASHA: epochs before a trial can stop")
    reduction_factor: float = Field(3.0, gt=1.0, le=10.0)
    max_concurrent_trials: int | None = Field(
        None, ge=1, le=256, description="default: GPUs available / GPUs per trial"
    )
    gpus_per_trial: float = Field(1.0, ge=0.0, le=8.0, description="GPUs of each trial worker")
    cpus_per_trial: float = Field(2.0, gt=0.0, le=64.0, description="CPUs of each trial worker")
    workers_per_trial: int = Field(1, ge=1, le=MAX_WORKERS,
                                   description="data-parallel workers of each trial")
    space: dict[str, Domain] = Field(min_length=1)

    @field_validator("space")
    @classmethod
    def _tunable_names(cls, space: dict[str, Domain]) -> dict[str, Domain]:
        unknown = sorted(set(space) - TUNABLE_PARAMS)
        if unknown:
            raise ValueError(
                f"cannot search over {', '.join(unknown)}; "
                f"tunable: {', '.join(sorted(TUNABLE_PARAMS))}"
            )
        problems = [p for name, domain in sorted(space.items())
                    for p in _domain_problems(name, domain)]
        if problems:
            raise ValueError("; ".join(problems))
        return space

    @field_validator("gpus_per_trial")
    @classmethod
    def _one_gpu_at_most(cls, value: float) -> float:
        # Ultralytics trains on several GPUs in child processes of its own, which cannot
        # report epochs to Ray Tune; a fraction lets several trials share one GPU.
        if value > 1:
            raise ValueError(
                f"gpus_per_trial is {value:g}, but a sweep trial trains on one GPU at most; "
                "use 1 (or a fraction such as 0.5 to share a GPU between trials), or run a "
                "train job for multi-GPU training"
            )
        return value


def _domain_problems(name: str, domain: Domain) -> list[str]:
    """Why a search dimension could sample values the hyperparameter does not accept.

    Ranges are checked at their ends (randint's upper end is excluded, as in Ray Tune) and
    choices value by value, against the same bounds as a train spec.
    """
    model: type[BaseModel] = TrainParams if name in TrainParams.model_fields else Augment
    annotation = model.model_fields[name].annotation
    form = next(k for k in ("uniform", "loguniform", "randint", "choice")
                if getattr(domain, k) is not None)
    if form != "choice" and annotation not in (int, float):
        takes = "true or false" if annotation is bool else "one of a fixed set of values"
        return [f"{name}: {form} cannot sample it ({name} takes {takes}); "
                "list the values with choice"]
    if form != "choice" and name == "imgsz":
        return ["imgsz: sizes must be multiples of 32; list them with choice"]
    if form in ("uniform", "loguniform") and annotation is int:
        return [f"{name}: {form} samples real numbers, but {name} is an integer; "
                "use randint or choice"]
    if form == "randint":
        low, high = domain.randint or (0, 0)
        values: list[Any] = [low, high - 1]
    elif form == "choice":
        values = list(domain.choice or [])
    else:
        values = list(getattr(domain, form))
    problems = []
    for value in values:
        try:
            model.model_validate({name: value})
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"]
            problems.append(f"{name}: {form} value {value!r} is not allowed ({reason})")
    return problems


class ExportFormat(StrEnum):
    ONNX = "onnx"
    ENGINE = "engine"  # TensorRT


class ExportGates(_Strict):
    """Largest |Δ mAP50-95| against best.pt that a format may show and still be published."""

    onnx: float = Field(0.005, ge=0.0, le=1.0)
    fp16: float = Field(0.005, ge=0.0, le=1.0)
    int8: float = Field(0.04, ge=0.0, le=1.0)
    latency_runs: int = Field(
        50, ge=50, le=10_000,
        description="warm timed runs per format and for best.pt (p95 needs at least 50)",
    )


class ExportParams(_Strict):
    formats: list[ExportFormat] = Field(default_factory=lambda: [ExportFormat.ONNX], min_length=1)
    half: bool = Field(True, description="TensorRT FP16 engine")
    int8: bool = Field(False, description="also build an INT8 engine calibrated on train images")
    imgsz: Imgsz | None = Field(None, description="default: the training imgsz")
    opset: int | None = Field(None, ge=11, le=23)
    simplify: bool = True
    dynamic: bool = False
    batch: int = Field(1, ge=1, le=256)
    gates: ExportGates = Field(default_factory=ExportGates)

    @field_validator("formats", mode="before")
    @classmethod
    def _supported_formats(cls, value: Any) -> Any:
        if isinstance(value, list):
            supported = {f.value for f in ExportFormat}
            # Only a string names a format. Test that first: a list or dict entry is unhashable,
            # and the set lookup would raise TypeError (a 500) instead of this 422.
            bad = [v for v in value if not isinstance(v, str) or v not in supported]
            if bad:
                shown = ", ".join(v if isinstance(v, str) else _short_repr(v) for v in bad)
                raise ValueError(
                    f"unsupported export format(s) {shown}; "
                    f"trainforge exports: {', '.join(sorted(supported))}"
                )
            if len(set(value)) != len(value):
                raise ValueError("export formats must not repeat")
        return value


#: An alias name: a lowercase word such as ``champion`` or ``staging``.
ALIAS_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"


class PromotePolicy(_Strict):
    """When a newly published version may take over an alias (``champion`` by default).

    The job compares the new version (the challenger) with the alias's current version on the
    same held-out split with identical settings, and moves the alias only when every rule holds.
    The first version of a model takes the alias without a comparison.
    """

    alias: str = Field("champion", pattern=ALIAS_PATTERN,
                       description="the alias to move when the challenger wins")
    min_map50_95_gain: float = Field(
        0.0, ge=-1.0, le=1.0,
        description="least overall mAP50-95 gain over the champion (0 allows a tie, a "
        "negative value a small loss)")
    max_class_ap50_95_drop: float | None = Field(
        0.02, ge=0.0, le=1.0,
        description="largest AP50-95 drop any one class may show (null: no per-class rule)")
    min_test_images_per_class: int = Field(
        0, ge=0, le=1_000_000,
        description="refuse to decide when a class appears in fewer held-out images than this")
    require_export_gates: bool = Field(
        True, description="every export format the spec asks for must have passed its gate")

    @field_validator("alias")
    @classmethod
    def _not_a_version(cls, value: str) -> str:
        try:
            check_alias_name(value, field="promote.alias")
        except LocationInvalid as exc:
            raise ValueError(exc.message.removeprefix("promote.alias: ")) from None
        return value


class Resources(_Strict):
    """Where a job trains: ``workers`` data-parallel training processes (Ray Train workers,
    DDP ranks), each with ``gpus_per_worker`` GPUs, ``cpus`` CPUs and ``memory``.

    A worker is one process driving one device, as in PyTorch DDP: ``gpus_per_worker`` is 0
    (CPU, gloo) or 1 (NCCL). ``train.batch`` is the global batch: each worker takes
    ``batch // workers`` images per step, as in Ultralytics' own multi-GPU training (so a
    multiple of ``workers`` uses all of it).

    Specs written before ``workers`` existed say ``gpus: N``; they keep working and mean the
    same N GPUs: ``gpus: 0`` or ``1`` is one worker with that many, ``gpus: N > 1`` is N
    one-GPU workers (Ultralytics used to run those N ranks in processes of its own).
    """

    workers: int = Field(1, ge=1, le=MAX_WORKERS,
                         description="data-parallel training workers (DDP ranks)")
    gpus_per_worker: int = Field(
        1, ge=0, le=1, description="GPUs of each worker: 0 (the CPU, even on a GPU host: "
                                   "Ultralytics' device=cpu) or 1; for N GPUs ask for N workers")
    gpu_type: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    cpus: int = Field(8, ge=1, le=256, description="CPUs of each worker")
    memory: str = Field("32Gi", pattern=MEMORY_PATTERN, description="memory of each worker")

    model_config = ConfigDict(json_schema_extra=lambda schema: schema["properties"].update(
        gpus={"type": "integer", "minimum": 0, "maximum": MAX_WORKERS, "deprecated": True,
              "description": "older form: N GPUs; read as workers and gpus_per_worker"}))

    @field_validator("gpus_per_worker", mode="before")
    @classmethod
    def _one_device_per_worker(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            raise ValueError(f"gpus_per_worker is {value}, but a worker is one training process "
                             "driving one GPU; for N GPUs ask for workers: N with "
                             "gpus_per_worker: 1")
        return value

    @model_validator(mode="before")
    @classmethod
    def _legacy_gpus(cls, data: Any) -> Any:
        """Read the old ``gpus: N`` (N GPUs of one job) as workers × gpus_per_worker."""
        if not isinstance(data, dict) or "gpus" not in data:
            return data
        clash = sorted({"workers", "gpus_per_worker"} & set(data))
        if clash:
            raise ValueError(f"gpus is the older form of workers and gpus_per_worker; "
                             f"drop gpus or {' and '.join(clash)}")
        data = dict(data)
        gpus = data.pop("gpus")
        if isinstance(gpus, bool) or not isinstance(gpus, int) or not 0 <= gpus <= MAX_WORKERS:
            raise ValueError(f"gpus must be a whole number from 0 to {MAX_WORKERS}, "
                             f"not {gpus!r}")
        data["workers"], data["gpus_per_worker"] = (gpus, 1) if gpus > 1 else (1, gpus)
        return data

    @property
    def total_gpus(self) -> int:
        """GPUs the job holds while it trains (what team limits count)."""
        return self.workers * self.gpus_per_worker


class JobSpec(_Strict):
    """A whole job: what to train on, from which weights, how, and what to export."""

    kind: JobKind = JobKind.TRAIN
    name: str = Field(pattern=NAME_PATTERN, description="model name (DNS label)")
    dataset: DatasetRef
    model: ModelRef = Field(default_factory=ModelRef)
    train: TrainParams = Field(default_factory=TrainParams)
    sweep: SweepParams | None = None
    export: ExportParams | None = None
    promote: PromotePolicy | None = Field(
        None, description="move an alias to the new version only when it beats the current one")
    resources: Resources = Field(default_factory=Resources)
    retries: int = Field(2, ge=0, le=10, description="attempts after a failure, resuming")
    timeout_minutes: int = Field(24 * 60, ge=1, le=7 * 24 * 60)

    @model_validator(mode="after")
    def _sections_match_kind(self) -> Self:
        if self.kind is JobKind.SWEEP and self.sweep is None:
            raise ValueError("kind 'sweep' needs a sweep section")
        if self.kind is not JobKind.SWEEP and self.sweep is not None:
            raise ValueError(f"a sweep section is only allowed with kind 'sweep', not {self.kind}")
        if self.sweep is not None and self.sweep.grace_period > self.train.epochs:
            raise ValueError(
                f"sweep.grace_period ({self.sweep.grace_period}) exceeds train.epochs "
                f"({self.train.epochs}), the most epochs a trial runs; lower it"
            )
        workers = self.resources.workers if self.kind is JobKind.TRAIN else 1
        if self.sweep is not None:
            workers = self.sweep.workers_per_trial
            if workers > 1 and 0 < self.sweep.gpus_per_trial < 1:
                raise ValueError("a data-parallel trial's workers need a whole GPU each: "
                                 "gpus_per_trial 0 or 1 with workers_per_trial > 1")
            smallest = _smallest_batch(self.sweep.space.get("batch"), self.train.batch)
            if smallest < workers:
                raise ValueError(
                    f"a trial's batch ({smallest}) is the global batch, split across "
                    f"sweep.workers_per_trial ({workers}): it needs one image per worker at "
                    "least")
        if self.train.batch < workers:
            raise ValueError(
                f"train.batch ({self.train.batch}) is the global batch, split across "
                f"resources.workers ({workers}): it needs one image per worker at least")
        if workers > 1 and self.train.rect:
            raise ValueError("train.rect needs one worker: rectangular batches cannot be "
                             "split across data-parallel workers")
        if self.kind is JobKind.EXPORT:
            if self.promote is not None:
                raise ValueError("a promote section needs a job that trains (kind train or "
                                 "sweep); promote an exported version with "
                                 "trainforge models promote")
            if self.export is None:
                raise ValueError("kind 'export' needs an export section")
            if self.model.from_scratch:
                raise ValueError("kind 'export' needs trained weights in model.base, not a YAML")
        return self

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


def _smallest_batch(domain: Domain | None, default: int) -> int:
    """The smallest ``batch`` a sweep's trials may train with."""
    if domain is None:
        return default
    if domain.randint is not None:
        return domain.randint[0]
    return min(int(v) for v in domain.choice or [default])


#: Sections users write as a bare value (``model: yolov8n.pt``, ``dataset: /data/x``) → the key
#: the value belongs under.
_SECTION_KEYS = {"dataset": "uri", "model": "base"}


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: ``field.path: message``; an unknown key gets what it probably
    meant (trainforge/spec_hints.py) and the section's allowed keys."""
    lines = []
    for item in error.errors():
        loc = item["loc"]
        path = ".".join(str(p) for p in loc) or "<root>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            section = _section(loc)
            hint = unknown_key_hint(JobSpec, section, str(loc[-1]))
            message = (f"unknown key {loc[-1]!r}; {hint + ' ' if hint else ''}"
                       f"allowed: {', '.join(sorted(section.model_fields))}")
        elif (item["type"] == "model_type" and len(loc) == 1 and loc[0] in _SECTION_KEYS
              and isinstance(item.get("input"), str)):
            message += (f"; write {loc[0]}: {{{_SECTION_KEYS[str(loc[0])]}: "
                        f"{json.dumps(item['input'])}}}")
        lines.append(f"{path}: {message}")
    return "\n".join(lines)


def _section(loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The spec section (model) whose keys the last part of ``loc`` was checked against."""
    model: type[BaseModel] = JobSpec
    parts = iter(loc[:-1])
    for part in parts:
        field = model.model_fields.get(str(part))
        if field is None:
            break
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:  # sweep.space: user-named keys
            value = typing.get_args(annotation)[1]
            if not (isinstance(value, type) and issubclass(value, BaseModel)):
                break
            next(parts, None)  # the user's key (a search dimension's name)
            model = value
            continue
        nested = nested_model(annotation)
        if nested is None:
            break
        model = nested
    return model


def parse_spec(data: Any) -> JobSpec:
    """Validate a mapping as a JobSpec.

    Raises:
        SpecError: with one ``path: message`` line per problem.
    """
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None


def load_spec(text: str | bytes, *, source: str = "<spec>") -> JobSpec:
    """Parse a YAML or JSON document (YAML is a superset) into a JobSpec.

    The document is untrusted: it is loaded within :mod:`trainforge.safeyaml`'s limits (size,
    depth, alias expansion) before any Python value is built.

    Args:
        text: the document.
        source: where it came from, for messages (a file name or URI).

    Returns:
        The validated spec.

    Raises:
        SpecError: the document is over a limit, not YAML/JSON, or not a valid spec.
    """
    try:
        data = safeyaml.safe_load(text, what="the job spec")
    except safeyaml.YamlLimitError as exc:
        raise SpecError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a job spec is a mapping, got {type(data).__name__}")
    try:
        return parse_spec(data)
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None


def load_spec_file(path: str | Path) -> JobSpec:
    return load_spec(Path(path).read_bytes(), source=str(path))


def json_schema() -> dict[str, Any]:
    """The JSON Schema published as docs/jobspec.schema.json."""
    return JobSpec.model_json_schema()


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


