"""``trainforge models compare --dataset``: both versions evaluated on this machine, by the
evaluation the promote step runs (jobs/train/promote.py).

It reads both versions' best.pt from the models store (``--store``) and needs the training
extra (Ultralytics); the recorded-scores comparison goes through the API instead. The kernel's
command line finds it through the ``trainforge.evaluation`` entry point (pyproject.toml).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from trainforge import aliases, registry
from trainforge.errors import InvalidRequest


def evaluated_comparison(root: str, name: str, first: str, second: str, dataset: str,
                         imgsz: int | None, batch: int) -> dict[str, Any]:
    """Both versions evaluated here, on ``dataset``'s test split (val when it has none).

    Raises:
        ModelNotFound: a version is not published.
        InvalidRequest: the versions cannot be compared (e.g. different classes).
    """
    from jobs.core.adapter import harden_loading, prepare_environment
    from jobs.train.promote import evaluate_pair
    from trainforge import promotion
    from trainforge.datasets import sync, write_local_data_yaml
    from trainforge.spec import PromotePolicy

    versions = tuple(aliases.resolve_version(root, name, ref) for ref in (first, second))
    manifest = registry.find_manifest(root, name, versions[0])
    if manifest is None:
        raise registry.ModelNotFound(f"model {name}@{versions[0]} is not published")
    size = imgsz or int(manifest.get("input_shape", [1, 3, 640, 640])[-1])
    with tempfile.TemporaryDirectory(prefix="trainforge-compare-") as tmp:
        work = Path(tmp)
        prepare_environment(work / "ultralytics")
        harden_loading()
        synced = sync(dataset, work / "cache")
        data_yaml = write_local_data_yaml(synced.path, work / "data.yaml")
        try:
            comparison = evaluate_pair(name, (versions[0], versions[1]), models_uri=root,
                                       data_yaml=data_yaml, imgsz=size, batch=batch,
                                       work_dir=work)
        except promotion.NotComparable as exc:
            raise InvalidRequest(str(exc)) from None
    comparison["dataset"] = {"uri": dataset, "fingerprint": synced.fingerprint,
                             "split": comparison["settings"]["split"]}
    comparison["verdict"] = promotion.decide(comparison, PromotePolicy()).to_json()
    return comparison
