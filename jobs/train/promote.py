"""The last step of a job with a ``promote:`` section: should the new version take the alias?

The challenger (the version just published) and the alias's current version (the champion) are
both downloaded from the registry and evaluated here, in one process, on the *same* split of
the job's local dataset with identical settings; :mod:`trainforge.promotion` turns the two
evaluations into a verdict, and the alias moves with a conditional write based on the head the
decision was made against (a concurrent move makes this one a recorded conflict, never a
silent overwrite).

The decision (figures, rules, outcome) is kept in the registry
(``<name>/_decisions/<version>.json``), in the job's artifacts (``promote/comparison.json`` and
the ``promotion`` section of ``train/report.json``) and in the job's events.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobs.core import dataset_step
from jobs.core.artifacts import JobArtifacts
from trainforge import aliases, lifecycle, promotion
from trainforge.errors import ObjectNotFound
from trainforge.layout import job_prefix
from trainforge.registry import find_manifest, resolve
from trainforge.reporting import JobReporter
from trainforge.spec import JobSpec
from trainforge.storage import join_key, open_location

log = logging.getLogger(__name__)

DECISION_SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Decision:
    """What the promotion step decided: ``outcome`` is promoted, kept or conflict."""

    outcome: str
    summary: str
    record: dict[str, Any]


def comparison_key(job_id: str) -> str:
    return join_key(job_prefix(job_id), "promote", "comparison.json")


def promote_version(
    spec: JobSpec,
    version: str,
    *,
    models_uri: str,
    data_yaml: Path,
    work_dir: Path,
    artifacts: JobArtifacts,
    reporter: JobReporter,
    dataset_fingerprint: str | None = None,
) -> Decision | None:
    """Compare ``spec.name@version`` with the alias's version and move the alias if it wins.

    Returns:
        The decision, or None when the spec has no ``promote`` section.
    """
    policy = spec.promote
    if policy is None:
        return None
    name, alias = spec.name, policy.alias
    earlier = lifecycle.read_decision(models_uri, name, version)
    if earlier is not None:  # a rerun of a job that already decided: keep that decision
        return Decision(earlier["outcome"], earlier["summary"], earlier)
    head = aliases.current(models_uri, name, alias)
    actor = f"job {version}"
    comparison: dict[str, Any] | None = None
    if head is None:
        verdict = promotion.first_version(version, alias)
    elif head.version == version:
        verdict = promotion.Verdict(True, f"{alias} already points at {version}", [])
    else:
        comparison, verdict = _compare_with(spec, version, head.version, models_uri=models_uri,
                                            data_yaml=data_yaml, work_dir=work_dir)
        comparison["dataset"] = {"uri": spec.dataset.uri, "fingerprint": dataset_fingerprint}
    outcome = "promoted" if verdict.promote else "kept"
    if verdict.promote and (head is None or head.version != version):
        try:
            aliases.move(models_uri, name, alias, version, actor=actor, reason=verdict.summary,
                         expected=head, details=_details(verdict, comparison))
        except aliases.AliasConflict as exc:
            outcome = "conflict"
            verdict = promotion.Verdict(False, f"not promoted: {exc.message}", verdict.rules)
    record = {
        "schema_version": DECISION_SCHEMA_VERSION,
        "model": name,
        "version": version,
        "alias": alias,
        "champion": head.version if head else None,
        "outcome": outcome,
        "summary": verdict.summary,
        "policy": policy.model_dump(),
        "verdict": verdict.to_json(),
        "comparison": comparison,
        "decided_at": datetime.now(UTC).isoformat(),
    }
    _keep(record, models_uri=models_uri, artifacts=artifacts)
    reporter.notice(verdict.summary, promotion=outcome, model=name, alias=alias,
                     version=version, champion=head.version if head else None)
    return Decision(outcome, verdict.summary, record)


def evaluate_pair(name: str, versions: tuple[str, str], *, models_uri: str,
                  data_yaml: Path, imgsz: int, batch: int, work_dir: Path
                  ) -> dict[str, Any]:
    """Evaluate two published versions (challenger, champion) on one split with identical
    settings, in this process; returns the comparison (figures and settings, no verdict).

    Raises:
        NotComparable: the versions detect different classes.
        ModelNotFound: a version is not published.
    """
    from jobs.core import adapter

    local = work_dir / "promote"
    shutil.rmtree(local, ignore_errors=True)
    split = "test" if dataset_step.has_split(data_yaml, "test") else "val"
    settings = adapter.EvalSettings(data_yaml, split, imgsz, batch, _device())
    evaluations = []
    try:
        for role, version in zip(("challenger", "champion"), versions, strict=True):
            weights = _download(resolve(f"registry://{name}@{version}", models_uri),
                                local / role / "best.pt")
            evaluation = adapter.evaluate(weights, settings, local / role / "val")
            evaluations.append({"version": version, "metrics": evaluation.metrics,
                                "per_class": evaluation.per_class})
    finally:
        shutil.rmtree(local, ignore_errors=True)
    comparison = promotion.compare(*evaluations)
    comparison["model"] = name
    comparison["settings"] = {k: v for k, v in settings.to_json().items() if k != "data_yaml"}
    comparison["source"] = "both versions evaluated in one process on the same split"
    return comparison


def _compare_with(spec: JobSpec, version: str, champion: str, *, models_uri: str,
                  data_yaml: Path, work_dir: Path) -> tuple[dict[str, Any], promotion.Verdict]:
    """Evaluate both versions on the job's held-out split; the comparison and the verdict."""
    assert spec.promote is not None
    try:
        comparison = evaluate_pair(spec.name, (version, champion), models_uri=models_uri,
                                   data_yaml=data_yaml, imgsz=spec.train.imgsz,
                                   batch=spec.train.batch, work_dir=work_dir)
    except promotion.NotComparable as exc:
        return ({"error": str(exc)}, promotion.Verdict(False, f"kept {champion}: {exc}", []))
    manifest = find_manifest(models_uri, spec.name, version) or {}
    formats = [f.value for f in spec.export.formats] if spec.export else []
    verdict = promotion.decide(comparison, spec.promote, gates=manifest.get("gates", {}),
                               export_formats=formats)
    return comparison, verdict


def _keep(record: dict[str, Any], *, models_uri: str, artifacts: JobArtifacts) -> None:
    lifecycle.keep_decision(models_uri, record)
    if record["comparison"] is not None:
        artifacts.put_json(comparison_key(artifacts.job_id),
                           {**record["comparison"], "verdict": record["verdict"]})
    report_key = artifacts.train_output("report.json")
    try:
        report = json.loads(artifacts.store.get(artifacts.key(report_key)))
    except ObjectNotFound:
        log.warning("no %s to add the promotion to", artifacts.uri(report_key))
        return
    report["promotion"] = {k: record[k] for k in ("alias", "champion", "outcome", "summary",
                                                  "verdict", "decided_at")}
    artifacts.put_json(report_key, report)


def _details(verdict: promotion.Verdict, comparison: dict[str, Any] | None) -> dict[str, Any]:
    if comparison is None or "deltas" not in comparison:
        return {"rules": [r.rule for r in verdict.rules]}
    return {"deltas": comparison["deltas"], "rules": verdict.to_json()["rules"]}


def _download(uri: str, dest: Path) -> Path:
    store, key = open_location(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    store.download(key, dest)
    return dest


def _device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def promote_step(spec: JobSpec, version: str, *, models_uri: str, data_yaml: Path,
                 work_dir: Path, artifacts: JobArtifacts, reporter: JobReporter,
                 dataset_fingerprint: str) -> None:
    """The job step after ``publish`` (train and sweep alike); nothing without ``promote:``."""
    from jobs.core.steps import step

    if spec.promote is None:
        return
    with step("promote") as out:
        decision = promote_version(spec, version, models_uri=models_uri, data_yaml=data_yaml,
                                   work_dir=work_dir, artifacts=artifacts, reporter=reporter,
                                   dataset_fingerprint=dataset_fingerprint)
        out.text = decision.summary if decision else "no promote section"
