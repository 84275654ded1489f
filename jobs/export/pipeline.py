"""Export best.pt to every requested format, gate each against best.pt, publish what passes.

Called by ``python -m jobs.export`` and, in-process, by the training job when its spec has an
``export`` section. A converted model that silently lost accuracy is worse than none, so each
format is evaluated with stock Ultralytics on the test split (val when there is none) with the
same settings as best.pt, and only formats within their gate are published; the numbers of
every format, passed, failed or skipped, go into report.json and the manifest.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.core import adapter
from jobs.core.dataset_step import LocalDataset, describe, first_image
from jobs.export import convert, measure, metrics
from jobs.export.results import ONNX, FormatResult, engine_key, threshold_for
from trainforge import datasets, registry
from trainforge.errors import ExportError
from trainforge.reporting import JobReporter
from trainforge.spec import ExportFormat, ExportParams, JobSpec
from trainforge.storage.base import sha256_file

log = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = 1
#: Artifact names the pipeline itself publishes (extra_files may not reuse them).
RESERVED = frozenset({"best.pt", "report.json", "manifest.json"})


@dataclass
class ExportOutcome:
    """What an export did: per-format results, the report, and the published version."""

    model: str
    version: str
    formats: dict[str, FormatResult]
    report: dict[str, Any]
    report_path: Path | None
    published: registry.Published | None
    duration_s: float
    #: True when the version was already published and nothing was redone.
    already_published: bool = False
    reference: dict[str, Any] = field(default_factory=dict)

    def keys_with(self, status: str) -> list[str]:
        return [k for k, r in self.formats.items() if r.status == status]

    @property
    def passed(self) -> list[str]:
        return self.keys_with("passed")

    @property
    def failed(self) -> list[str]:
        return self.keys_with("failed")

    @property
    def skipped(self) -> list[str]:
        return self.keys_with("skipped")

    @property
    def ok(self) -> bool:
        """Published, and no requested format failed (skipped ones do not count)."""
        return self.published is not None and not self.failed

    def summary(self) -> str:
        parts = [f"{k}: {r.status}" + (f" ({r.reason})" if r.reason else "")
                 for k, r in self.formats.items()]
        return "; ".join(parts)


def planned_formats(params: ExportParams) -> list[tuple[str, convert.Precision | None]]:
    """Format keys to produce: ``onnx`` and one ``engine-<precision>`` per engine precision.

    An engine request builds FP16 when ``half``, INT8 when ``int8``, and FP32 when neither.
    """
    plan: list[tuple[str, convert.Precision | None]] = []
    for fmt in params.formats:
        if fmt is ExportFormat.ONNX:
            plan.append((ONNX, None))
        elif fmt is ExportFormat.ENGINE:
            precisions: list[convert.Precision] = []
            if params.half:
                precisions.append("fp16")
            if params.int8:
                precisions.append("int8")
            plan += [(engine_key(p), p) for p in precisions or ["fp32"]]
    return plan


def export_and_publish(
    spec: JobSpec,
    *,
    job_id: str,
    weights: Path,
    data_yaml: Path,
    workdir: Path,
    models_uri: str,
    extra_files: Mapping[str, Path] = {},
    metadata: Mapping[str, Any] = {},
    reporter: JobReporter | None = None,
) -> ExportOutcome:
    """Export, gate, write report.json and publish ``<models>/<spec.name>/<job_id>/``.

    Args:
        spec: the job spec; its ``export`` section says what to produce.
        job_id: the version to publish (a rerun of the job publishes the same version).
        weights: best.pt.
        data_yaml: a local data.yaml with absolute paths (evaluation and INT8 calibration).
        workdir: scratch space for exports and validation runs.
        models_uri: root of the models bucket.
        extra_files: more artifacts to publish as they are (e.g. last.pt, results.csv). An
            entry named ``report.json`` is merged into the published report, whose ``export``
            section this function owns.
        metadata: extra manifest fields (e.g. training metrics, dataset_fingerprint).
        reporter: where progress messages go.

    Returns:
        The outcome; ``outcome.failed`` lists formats that failed their gate or conversion.

    Raises:
        ExportError: the spec has no export section, best.pt cannot be evaluated, or
            publishing failed.
        DatasetError: data_yaml is unusable.
    """
    if spec.export is None:
        raise ExportError("the job spec has no export section; add export: {formats: [onnx]}")
    # Every load below (best.pt, its exports, the evaluation split's labels) is a safe one,
    # whichever job calls this.
    adapter.harden_loading()
    reporter = reporter or JobReporter(None, None, None)
    started = time.perf_counter()
    outcome: ExportOutcome | None = None
    try:
        existing = registry.find_manifest(models_uri, spec.name, job_id)
        if existing is not None:
            outcome = _already_published(spec, job_id, models_uri, existing, started)
            reporter.message(f"{spec.name}@{job_id} is already published; nothing to redo",
                             manifest=outcome.published.manifest_uri if outcome.published
                             else None)
            return outcome
        outcome = _export(spec, spec.export, job_id=job_id, weights=weights,
                          data_yaml=data_yaml, workdir=workdir, models_uri=models_uri,
                          extra_files=extra_files, metadata=metadata, reporter=reporter,
                          started=started)
        return outcome
    finally:
        formats = tuple(outcome.formats.values()) if outcome else ()
        metrics.push(metrics.ExportMetrics(
            model=spec.name, duration_s=time.perf_counter() - started,
            succeeded=bool(outcome and outcome.ok), finished_at=time.time(), formats=formats,
            reference_latency=metrics.reference_series(formats),
        ))


def _already_published(spec: JobSpec, job_id: str, models_uri: str, manifest: dict[str, Any],
                       started: float) -> ExportOutcome:
    gates = manifest.get("gates", {})
    formats = {k: FormatResult.from_json(v) for k, v in gates.items()}
    published = registry.Published(registry.manifest_uri(models_uri, spec.name, job_id),
                                   manifest, created=False)
    return ExportOutcome(spec.name, job_id, formats, manifest, None, published,
                         time.perf_counter() - started, already_published=True)


@dataclass(frozen=True)
class _Checkpoint:
    imgsz: int | None
    names: dict[int, str]


def _read_checkpoint(weights: Path) -> _Checkpoint:
    imgsz, names = adapter.checkpoint_input(weights)  # ExportError when it cannot load it
    return _Checkpoint(imgsz, names)


def _export(
    spec: JobSpec,
    params: ExportParams,
    *,
    job_id: str,
    weights: Path,
    data_yaml: Path,
    workdir: Path,
    models_uri: str,
    extra_files: Mapping[str, Path],
    metadata: Mapping[str, Any],
    reporter: JobReporter,
    started: float,
) -> ExportOutcome:
    out = workdir / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    dataset = describe(data_yaml)
    ckpt = _read_checkpoint(weights)
    imgsz = params.imgsz or ckpt.imgsz
    if imgsz is None:
        raise ExportError(f"{weights.name} does not record its training imgsz; set export.imgsz")
    if imgsz % 32:
        raise ExportError(f"{weights.name} was trained at imgsz {imgsz}, not a multiple of the "
                          "stride 32; set export.imgsz to a multiple of 32")
    if len(ckpt.names) != len(dataset.names):
        raise ExportError(f"{weights.name} has {len(ckpt.names)} classes but {data_yaml} has "
                          f"{len(dataset.names)}: evaluate on the dataset the model was trained on")
    clash = sorted(set(extra_files) & (RESERVED - {"report.json"}))
    if clash:
        raise ExportError(f"extra files may not be named {', '.join(clash)}")
    bench = _Bench(weights, dataset, imgsz, params, workdir / "val")
    results: dict[str, FormatResult] = {}
    gpu = convert.cuda_gpu()
    trt_missing = convert.tensorrt_unavailable_reason()
    for key, precision in planned_formats(params):
        result = FormatResult(key, threshold=threshold_for(key, params.gates))
        results[key] = result
        if precision is not None and trt_missing:
            result.reason = f"TensorRT engine not built: {trt_missing}"
            log.warning("%s skipped: %s", key, result.reason)
            reporter.notice(f"{key} skipped", reason=result.reason)
            continue
        began = time.perf_counter()
        try:
            if precision is None:
                path = convert.export_onnx(weights, out / "model.onnx", imgsz=imgsz,
                                           batch=params.batch, dynamic=params.dynamic,
                                           simplify=params.simplify, opset=params.opset)
                device = measure.onnx_device()
            else:
                assert gpu is not None  # trt_missing is None only with a CUDA device
                path = convert.export_engine(
                    weights, out / convert.engine_file_name(gpu, precision),
                    precision=precision, imgsz=imgsz, batch=params.batch,
                    dynamic=params.dynamic, simplify=params.simplify, opset=params.opset,
                    data_yaml=dataset.data_yaml, train_images=dataset.train_images)
                device = str(gpu.index)
            result.export_seconds = round(time.perf_counter() - began, 3)
            result.path, result.artifact = path, path.name
            result.bytes, result.sha256 = path.stat().st_size, sha256_file(path)
            bench.gate(result, path, device, params.gates.latency_runs)
        except ExportError as exc:
            result.status, result.reason = "failed", exc.message
        log.info("%s %s in %.1fs%s", key, result.status, time.perf_counter() - began,
                 f": {result.reason}" if result.reason else "")
        reporter.notice(f"{key} {result.status}", map_delta=result.map_delta,
                        latency_p50_s=(result.latency or {}).get("p50"), reason=result.reason)

    export_section = {
        "imgsz": imgsz, "batch": params.batch, "dynamic": params.dynamic,
        "opset": params.opset, "simplify": params.simplify,
        "input_shape": [params.batch, 3, imgsz, imgsz],
        "evaluation": bench.settings_json(),
        "reference": bench.reference_json(),
        "environment": _environment(gpu),
        "formats": {k: r.to_json() for k, r in results.items()},
    }
    report = _merged_report(extra_files.get("report.json"), export_section, spec, job_id)
    report_path = workdir / "report.json"
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")

    files: dict[str, Path] = {k: Path(v) for k, v in extra_files.items() if k != "report.json"}
    files["best.pt"] = weights
    files["report.json"] = report_path
    for result in results.values():
        if result.status == "passed" and result.path is not None and result.artifact:
            files[result.artifact] = result.path
    manifest_fields = _manifest_fields(spec, job_id, dataset, ckpt, export_section, results,
                                       metadata)
    published = registry.publish(models_uri, spec.name, job_id, files, manifest_fields)
    reporter.message(f"published {spec.name}@{job_id}", manifest=published.manifest_uri,
                     artifacts=", ".join(sorted(files)))
    return ExportOutcome(spec.name, job_id, results, report, report_path, published,
                         time.perf_counter() - started, reference=bench.reference_json())


class _Bench:
    """Measures formats against best.pt, evaluating best.pt once per device."""

    def __init__(self, weights: Path, dataset: LocalDataset, imgsz: int, params: ExportParams,
                 save_dir: Path) -> None:
        self.weights, self.dataset, self.imgsz, self.params = weights, dataset, imgsz, params
        self.save_dir = save_dir
        self._evals: dict[str, adapter.Evaluation] = {}
        #: best.pt's latency per device, from its first pairing with a format.
        self._latency: dict[str, measure.Latency] = {}
        # Latency at batch 1 unless the artifact has a fixed larger batch.
        self._latency_batch = 1 if params.dynamic else params.batch
        self._input = measure.latency_input(first_image(dataset), imgsz, self._latency_batch)

    def settings(self, device: str) -> adapter.EvalSettings:
        return measure.eval_settings(self.dataset.data_yaml, self.dataset.eval_split, self.imgsz,
                                     self.params.batch, device)

    def settings_json(self) -> dict[str, Any]:
        data = self.settings("cpu").to_json()
        data.pop("device")
        data["latency_batch"] = self._latency_batch
        data["latency_warmup_runs"] = measure.WARMUP_RUNS
        return data

    def reference(self, device: str) -> adapter.Evaluation:
        if device not in self._evals:
            self._evals[device] = measure.evaluate(self.weights, self.settings(device),
                                                   self.save_dir / f"pytorch-{device}")
            log.info("best.pt on %s: mAP50-95 %.4f", device, self._evals[device].map50_95)
        return self._evals[device]

    def reference_json(self) -> dict[str, Any]:
        return {
            ("cpu" if d == "cpu" else f"cuda:{d}"): {
                **e.accuracy_json(),
                "latency": self._latency[d].to_json() if d in self._latency else None,
            }
            for d, e in self._evals.items()
        }

    def gate(self, result: FormatResult, path: Path, device: str, runs: int) -> None:
        """Evaluate ``path``, compare with best.pt on the same device, time both, judge."""
        ref = self.reference(device)
        got = measure.evaluate(path, self.settings(device), self.save_dir / result.key)
        result.device = "cpu" if device == "cpu" else f"cuda:{device}"
        result.map50_95, result.map50 = got.map50_95, got.map50
        result.reference_map50_95, result.reference_map50 = ref.map50_95, ref.map50
        result.map_delta = got.map50_95 - ref.map50_95
        result.judge()
        # best.pt and the format are timed turn by turn on the same input and device.
        reference = measure.ultralytics_runner(self.weights, self._input, device=device)
        if path.suffix == ".onnx":
            candidate = measure.onnxruntime_runner(path, self._input, device=device,
                                                   threads=reference.threads)
        else:
            candidate = measure.ultralytics_runner(path, self._input, device=device)
        ref_latency, latency = measure.time_interleaved([reference, candidate], runs=runs)
        self._latency.setdefault(device, ref_latency)
        result.reference_latency = ref_latency.to_json()
        result.latency = latency.to_json()


def _environment(gpu: convert.GpuInfo | None) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": adapter.ultralytics_version(),
        "onnxruntime": onnxruntime.__version__,
        "tensorrt": convert.tensorrt_version(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": None if gpu is None else {"name": gpu.name, "slug": gpu.slug,
                                          "capability": gpu.capability},
    }


def _merged_report(train_report: Path | None, export_section: dict[str, Any], spec: JobSpec,
                   job_id: str) -> dict[str, Any]:
    report: dict[str, Any] = {}
    if train_report is not None:
        try:
            loaded = json.loads(Path(train_report).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ExportError(f"extra file report.json ({train_report}) is not JSON: {exc}") \
                from None
        if not isinstance(loaded, dict):
            raise ExportError(f"extra file report.json ({train_report}) is not a JSON object")
        report.update(loaded)
    report.setdefault("schema_version", REPORT_SCHEMA_VERSION)
    report.setdefault("model", spec.name)
    report.setdefault("job_id", job_id)
    report["export"] = {"created_at": datetime.now(UTC).isoformat(), **export_section}
    return report


def _manifest_fields(
    spec: JobSpec,
    job_id: str,
    dataset: LocalDataset,
    ckpt: _Checkpoint,
    export_section: dict[str, Any],
    results: dict[str, FormatResult],
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    caller_metrics = metadata.get("metrics")
    metrics_field: dict[str, Any] = dict(caller_metrics) if isinstance(caller_metrics, Mapping) \
        else {}
    metrics_field["pytorch"] = export_section["reference"]
    for key, result in results.items():
        if result.status != "skipped":
            metrics_field[key] = {"map50_95": result.map50_95, "map50": result.map50,
                                  "map_delta": result.map_delta, "latency": result.latency}
    fields: dict[str, Any] = dict(metadata)
    fields.update({
        "source": {"job_id": job_id, "kind": str(spec.kind), "base": spec.model.base,
                   "dataset": spec.dataset.uri},
        "dataset_fingerprint": metadata.get("dataset_fingerprint") or dataset.fingerprint
        or datasets.fingerprint(dataset.root),
        "class_names": {str(k): v for k, v in sorted(ckpt.names.items())},
        "input_shape": export_section["input_shape"],
        "dynamic": export_section["dynamic"],
        "metrics": metrics_field,
        "gates": {k: r.to_json() for k, r in results.items()},
    })
    return fields
