"""A published version as a Triton Inference Server model repository.

Layout (what Triton's model repository documentation asks for)::

    <repo>/<name>/config.pbtxt            platform, max_batch_size, inputs and outputs
    <repo>/<name>/<n>/model.onnx          platform onnxruntime_onnx, or
    <repo>/<name>/<n>/model.plan          platform tensorrt_plan (an engine for one GPU)
    <repo>/<name>/<n>/manifest.json       which trainforge version <n> is, with its checksums

``<n>`` is Triton's integer version: the number already holding this trainforge version, else
the next free one, so pulling a new champion adds a version that Triton's default policy
(the latest one) serves. A version folder is filled under a temporary name and renamed into
place, so a Triton polling the repository never loads a half-written one.

Inputs and outputs (names, dtypes, dims) are read from the version's ONNX export; a TensorRT
engine is built from the same export settings, so its tensors are the ONNX file's. Nothing
here talks HTTP: the caller passes ``fetch``, a checked download (trainforge.client).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainforge.errors import InvalidRequest, NotFound

__all__ = ["Tensor", "TritonModel", "batching", "config_text", "engine_for_gpu", "onnx_io",
           "strip_engine_header", "version_number", "write_repository"]

ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
MANIFEST = "manifest.json"
#: A checked download of one listed file (``{"name", "size", "sha256", "url"}``) to a path.
Fetch = Callable[[Mapping[str, Any], Path], object]

# ONNX TensorProto element types → Triton's DataType names (model_config.proto).
_DTYPES = {"FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "DOUBLE": "TYPE_FP64",
           "BFLOAT16": "TYPE_BF16", "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING",
           **{t: f"TYPE_{t}" for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
                                       "UINT32", "UINT64")}}


@dataclass(frozen=True)
class Tensor:
    """One input or output: Triton's data type name and its dims (-1 where dynamic)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TritonModel:
    """What :func:`write_repository` wrote."""

    config: Path
    version_dir: Path
    #: The files of the version folder (the model file, manifest.json, a TensorRT engine).
    files: list[Path]
    number: int
    platform: str
    max_batch_size: int
    #: False when the ONNX export was not there to read tensors from (Triton then reads them
    #: from the plan: its auto-complete).
    has_io: bool


def onnx_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """The graph inputs (less initializers) and outputs of an ONNX file.

    Raises:
        InvalidRequest: the ``onnx`` package is missing, or a tensor's type has no Triton
            counterpart.
    """
    try:
        import onnx
    except ImportError:
        raise InvalidRequest("the triton layout reads the model's inputs and outputs with the "
                             "onnx package: pip install onnx") from None
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def tensor(value: Any) -> Tensor:
        typed = value.type.tensor_type
        kind = onnx.TensorProto.DataType.Name(typed.elem_type)
        if kind not in _DTYPES:
            raise InvalidRequest(f"{path.name}: tensor {value.name!r} has type {kind}, which "
                                 "Triton does not serve")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                     for d in typed.shape.dim)
        return Tensor(value.name, _DTYPES[kind], dims)

    inputs = [tensor(v) for v in graph.input if v.name not in initializers]
    return inputs, [tensor(v) for v in graph.output]


def batching(inputs: Sequence[Tensor], outputs: Sequence[Tensor], export_batch: int
             ) -> tuple[int, list[Tensor], list[Tensor]]:
    """Triton's ``max_batch_size`` and the dims it wants.

    A model whose every tensor has a dynamic first dimension batches: ``max_batch_size`` is
    the export's batch (a TensorRT engine's optimisation profile ends there) and the dims leave
    the batch dimension out. A fixed-batch export does not: ``max_batch_size`` 0 and the full
    shapes.
    """
    tensors = [*inputs, *outputs]
    if tensors and all(t.dims and t.dims[0] == -1 for t in tensors):
        def unbatched(t: Tensor) -> Tensor:
            return Tensor(t.name, t.data_type, t.dims[1:])

        return (max(1, export_batch), [unbatched(t) for t in inputs],
                [unbatched(t) for t in outputs])
    return 0, list(inputs), list(outputs)


def config_text(name: str, platform: str, max_batch_size: int, inputs: Sequence[Tensor],
                outputs: Sequence[Tensor], *, comment: str) -> str:
    """``config.pbtxt`` in protobuf text format (Triton's ``inference.ModelConfig``)."""
    lines = [f"# {comment}", f'name: "{name}"', f'platform: "{platform}"',
             f"max_batch_size: {max_batch_size}"]
    for section, tensors in (("input", inputs), ("output", outputs)):
        if not tensors:
            continue
        entries = [f'  {{\n    name: "{t.name}"\n    data_type: {t.data_type}\n'
                   f"    dims: [ {', '.join(str(d) for d in t.dims)} ]\n  }}" for t in tensors]
        lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
    return "\n".join(lines) + "\n"


def engine_for_gpu(files: Sequence[str], gpu: str) -> str:
    """The engine among ``files`` built for ``gpu``: a GPU slug (``nvidia-h100``), or a slug
    and precision (``nvidia-h100-fp16``) when the version has several engines for it.

    Raises:
        NotFound: no engine for that GPU.
        InvalidRequest: several engines match; the message names them.
    """
    engines = sorted(f for f in files if f.startswith("model-") and f.endswith(".engine"))
    exact = f"model-{gpu}.engine"
    if exact in engines:
        return exact
    matches = [f for f in engines if f.startswith(f"model-{gpu}-")]
    if not matches:
        built = ", ".join(e.removeprefix("model-").removesuffix(".engine") for e in engines)
        raise NotFound(f"no TensorRT engine for GPU {gpu!r}; this version has "
                       f"{built or 'no engine'} (export: {{formats: [engine]}} on that GPU)")
    if len(matches) > 1:
        choices = " or ".join(m.removeprefix("model-").removesuffix(".engine") for m in matches)
        raise InvalidRequest(f"several engines for {gpu!r}: name one with --gpu {choices}")
    return matches[0]


def strip_engine_header(src: Path, dest: Path) -> None:
    """Write ``src`` without the metadata header Ultralytics puts ahead of a serialized
    TensorRT engine (a 4-byte little-endian length, then that much JSON), atomically.

    Triton deserialises ``model.plan`` as it is: with the header, it would not load. A file
    without a header is copied unchanged.
    """
    with src.open("rb") as fh:
        length = int.from_bytes(fh.read(4), "little")
        offset = 0
        if 0 < length <= src.stat().st_size - 4:
            try:
                json.loads(fh.read(length))
                offset = 4 + length
            except ValueError:  # engine bytes, not JSON: there is no header
                pass
        fh.seek(offset)
        _write_atomically(dest, lambda out: shutil.copyfileobj(fh, out))


def version_number(model_dir: Path, version: str, requested: int | None = None) -> int:
    """Triton's integer version for trainforge ``version`` in ``model_dir``.

    Raises:
        InvalidRequest: ``requested`` holds another trainforge version already.
    """
    held = {int(d.name): _pulled_version(d) for d in model_dir.glob("*")
            if d.is_dir() and d.name.isdigit() and int(d.name) > 0}
    if requested is not None:
        if held.get(requested) not in (None, version):
            raise InvalidRequest(f"{model_dir / str(requested)} holds version "
                                 f"{held[requested]}; pick another Triton version number")
        return requested
    same = [n for n, pulled in held.items() if pulled == version]
    return min(same) if same else max(held, default=0) + 1


def _pulled_version(version_dir: Path) -> str | None:
    try:
        return str(json.loads((version_dir / MANIFEST).read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def write_repository(repo: Path, name: str, manifest: Mapping[str, Any],
                     items: Sequence[Mapping[str, Any]], fetch: Fetch, *,
                     gpu: str | None = None, number: int | None = None) -> TritonModel:
    """Write one published version into the Triton model repository ``repo``.

    Args:
        repo: the repository root (``<repo>/<name>/`` is the model).
        name: the model name (Triton's model name too).
        manifest: the version's manifest.
        items: the version's files as the artifacts listing gives them (``manifest.json``
            included).
        fetch: a checked, atomic, resumable download of one item to a path.
        gpu: serve the TensorRT engine built for this GPU (``tensorrt_plan``); default the
            ONNX export (``onnxruntime_onnx``).
        number: Triton's version number (default: see :func:`version_number`).

    Returns:
        Where the config and the version folder are, and what the config says.

    Raises:
        NotFound: the version has no ONNX export (or no engine for ``gpu``).
        InvalidRequest: ambiguous ``gpu``, a taken ``number``, or unreadable tensors.
    """
    by_name = {str(item["name"]): item for item in items}
    version = str(manifest["version"])
    if gpu is None and ONNX_FILE not in by_name:
        raise NotFound(f"{name}@{version} has no {ONNX_FILE}: export it "
                       "(export: {formats: [onnx]}), or serve an engine with --gpu")
    engine = engine_for_gpu(list(by_name), gpu) if gpu is not None else None
    model_dir = repo / name
    n = version_number(model_dir, version, number)
    final = model_dir / str(n)
    # A folder already there (an earlier pull of this version) is checked file by file in
    # place; a new one is filled under a name Triton ignores, then renamed.
    work = final if final.is_dir() else model_dir / f".{n}.partial"
    work.mkdir(parents=True, exist_ok=True)
    fetch(by_name[MANIFEST], work / MANIFEST)
    with tempfile.TemporaryDirectory(prefix=".onnx-", dir=model_dir) as scratch:
        if engine is None:
            platform, onnx_path = "onnxruntime_onnx", work / ONNX_FILE
            fetch(by_name[ONNX_FILE], onnx_path)
        else:
            platform, onnx_path = "tensorrt_plan", Path(scratch) / ONNX_FILE
            fetch(by_name[engine], work / engine)
            strip_engine_header(work / engine, work / PLAN_FILE)
            if ONNX_FILE in by_name:  # the engine's tensors are its ONNX export's
                fetch(by_name[ONNX_FILE], onnx_path)
        inputs, outputs = onnx_io(onnx_path) if onnx_path.is_file() else ([], [])
    if work != final:
        work.rename(final)
    export_batch = int((manifest.get("input_shape") or [1])[0])
    max_batch, inputs, outputs = batching(inputs, outputs, export_batch)
    if not inputs and not outputs and manifest.get("dynamic"):
        max_batch = export_batch
    config = model_dir / "config.pbtxt"
    text = config_text(name, platform, max_batch, inputs, outputs,
                       comment=f"written by trainforge models pull: {name}@{version} is "
                       f"version {n}")
    _write_atomically(config, lambda out: out.write(text.encode()))
    files = sorted(p for p in final.iterdir() if p.is_file() and not p.name.startswith("."))
    return TritonModel(config, final, files, n, platform, max_batch, bool(inputs or outputs))


def _write_atomically(dest: Path, write: Callable[[Any], object]) -> None:
    tmp = dest.with_name(f".{dest.name}.part")
    with tmp.open("wb") as out:
        write(out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(dest)
