"""The loading allow-list (``adapter.SAFE_GLOBALS``): nothing that runs code, nothing missing.

"Nothing missing" is re-derived here the way the list was made: every detection model YAML
the installed Ultralytics ships is built and saved as a checkpoint, and the globals torch
would refuse in it are read with ``torch.serialization.get_unsafe_globals_in_checkpoint`` in a
process that never hardened its loading. An Ultralytics upgrade that adds a layer fails here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.core import adapter
from tests.fixtures.malicious import REPO

#: Module prefixes whose globals can run code or reach the system when called by an unpickler.
_DANGEROUS = ("builtins.", "os.", "posix.", "nt.", "sys.", "subprocess.", "functools.",
              "operator.", "importlib.", "runpy.", "pickle.", "shutil.", "socket.", "io.",
              "codecs.", "_codecs.", "types.", "ctypes.", "multiprocessing.", "torch.hub",
              "torch.load", "torch.jit", "numpy.load", "ultralytics.utils.downloads",
              "ultralytics.utils.checks", "ultralytics.utils.patches")
#: Allowed on purpose though no checkpoint of this Ultralytics version has them (see the
#: comments on SAFE_GLOBALS): IterableSimpleNamespace comes from mid-run checkpoints (checked
#: with real ones in test_weights_check.py), the rest from checkpoints made elsewhere.
_NOT_FROM_YAMLS = {"ultralytics.utils.IterableSimpleNamespace", "pathlib.PosixPath",
                   "numpy._core.multiarray.scalar", "numpy.dtype", "numpy.dtypes.Float64DType",
                   "numpy.dtypes.Float32DType"}

#: Run in a fresh interpreter: {yaml file: [globals torch refuses]} for each shipped detection
#: YAML (its first scale: scales change widths, never layer classes), as JSON into the file
#: named by its first argument (Ultralytics prints to stdout). With a second argument
#: "hardened" it first runs adapter.harden_loading() and also loads each checkpoint.
_DERIVE = r"""
import copy, io, json, re, sys
from pathlib import Path
import torch, ultralytics
from ultralytics.nn.tasks import DetectionModel, yaml_model_load
from ultralytics.utils import LOGGER
LOGGER.setLevel(40)
hardened = sys.argv[2:] == ["hardened"]
if hardened:
    from jobs.core import adapter
    adapter.harden_loading()
other_tasks = re.compile(r"-(cls|seg|pose|obb|world|worldv2|depth|sem|rtdetr)|yoloe|rtdetr|resnet")
root = Path(ultralytics.__file__).parent / "cfg" / "models"
found = {}
for path in sorted(root.rglob("*.yaml")):
    if other_tasks.search(path.name):
        continue
    cfg = yaml_model_load(path)
    scale = next(iter(cfg.get("scales") or {}), None)
    if scale:
        cfg["scale"] = scale
    model = copy.deepcopy(DetectionModel(cfg, nc=3, verbose=False)).half()
    buffer = io.BytesIO()
    torch.save({"model": model, "ema": None}, buffer)
    buffer.seek(0)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)
    found[str(path.relative_to(root))] = unsafe
    if hardened:
        buffer.seek(0)
        assert isinstance(torch.load(buffer, weights_only=False)["model"], DetectionModel)
Path(sys.argv[1]).write_text(json.dumps(found))
"""


@pytest.fixture(scope="module")
def shipped_yaml_globals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_FORCE_")}
    env.update({"YOLO_OFFLINE": "1",
                "YOLO_CONFIG_DIR": str(tmp_path_factory.mktemp("ultralytics"))})
    out = tmp_path_factory.mktemp("derived") / "globals.json"
    done = subprocess.run([sys.executable, "-c", _DERIVE, str(out)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, list[str]] = json.loads(out.read_text())
    assert len(found) >= 20, f"expected the shipped detection YAMLs, got {sorted(found)}"
    return found


def test_nothing_on_the_list_can_run_code() -> None:
    names = [*adapter.SAFE_GLOBALS, *adapter.SAFE_GLOBAL_ALIASES,
             *adapter.SAFE_GLOBAL_ALIASES.values()]
    assert [n for n in names if n.startswith(_DANGEROUS) or "getattr" in n] == []
    assert len(set(adapter.SAFE_GLOBALS)) == len(adapter.SAFE_GLOBALS)


def test_every_entry_is_a_class_or_numpys_scalar_rebuilder() -> None:
    import torch

    for name, obj, _pickled in _resolved():
        if name.startswith(("torch.nn.", "ultralytics.nn.")):
            assert isinstance(obj, type) and issubclass(obj, torch.nn.Module), name
        elif name != "numpy._core.multiarray.scalar":
            assert isinstance(obj, type), name


def test_aliases_only_rename_allowed_globals() -> None:
    assert set(adapter.SAFE_GLOBAL_ALIASES.values()) <= set(adapter.SAFE_GLOBALS)


def _resolved() -> list[tuple[str, object, str]]:
    pairs = adapter.safety._allow_list()
    names = [*adapter.SAFE_GLOBALS, *adapter.SAFE_GLOBAL_ALIASES.values()]
    return [(name, obj, pickled) for name, (obj, pickled) in zip(names, pairs, strict=True)]


@pytest.mark.slow  # builds every shipped model YAML in a child process
def test_every_shipped_detection_model_is_covered(
        shipped_yaml_globals: dict[str, list[str]]) -> None:
    missing = {yaml: sorted(set(names) - set(adapter.SAFE_GLOBALS))
               for yaml, names in shipped_yaml_globals.items()}
    assert {k: v for k, v in missing.items() if v} == {}


@pytest.mark.slow  # the same child process
def test_nothing_is_allowed_that_no_model_needs(shipped_yaml_globals: dict[str, list[str]]
                                               ) -> None:
    needed = {name for names in shipped_yaml_globals.values() for name in names}
    assert set(adapter.SAFE_GLOBALS) - needed - _NOT_FROM_YAMLS == set()


@pytest.mark.slow  # loads every shipped model in a hardened child process
def test_a_hardened_process_loads_every_shipped_model(tmp_path: Path) -> None:
    """The list as registered (not just as written) loads each of them, through the forced
    weights-only load that ``weights_only=False`` (Ultralytics' own call) no longer escapes."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "YOLO_OFFLINE": "1",
           "YOLO_CONFIG_DIR": str(tmp_path)}
    out = tmp_path / "globals.json"
    done = subprocess.run([sys.executable, "-c", _DERIVE, str(out), "hardened"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(out.read_text())
    assert len(found) >= 20 and not any(found.values()), found
