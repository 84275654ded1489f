"""Champion/challenger comparison and the promotion verdict: numbers in, a decision out.

Nothing here evaluates a model or touches storage. The job evaluates both versions on the same
held-out split with identical settings (jobs/train/promote.py) and passes the two evaluations
here; the API and CLI compare stored evaluations the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from trainforge.spec import PromotePolicy

COMPARISON_SCHEMA_VERSION = 1
METRICS = ("mAP50", "mAP50-95", "precision", "recall")


@dataclass(frozen=True)
class RuleResult:
    rule: str
    passed: bool
    figure: float | None
    limit: float | None
    message: str


@dataclass(frozen=True)
class Verdict:
    promote: bool
    summary: str
    rules: list[RuleResult]

    def to_json(self) -> dict[str, Any]:
        return {"promote": self.promote, "summary": self.summary,
                "rules": [asdict(r) for r in self.rules]}


class NotComparable(ValueError):
    """The two versions cannot be scored against each other (different classes or splits)."""


def compare(challenger: Mapping[str, Any], champion: Mapping[str, Any]) -> dict[str, Any]:
    """Side by side figures of two evaluations of the same split.

    Args:
        challenger, champion: ``{"version", "metrics", "per_class"}`` each, ``per_class`` as
            in report.json (name, images, instances, AP50, AP50-95…), in class-id order.

    Returns:
        Both sides' overall metrics, their deltas (challenger − champion) and one row per
        class with both APs and their deltas.

    Raises:
        NotComparable: the two do not score the same classes.
    """
    ours, theirs = list(challenger["per_class"]), list(champion["per_class"])
    names = [row["name"] for row in ours]
    if names != [row["name"] for row in theirs]:
        raise NotComparable(
            f"the versions detect different classes: {challenger['version']} "
            f"{names}, {champion['version']} {[row['name'] for row in theirs]}")
    per_class = []
    for mine, other in zip(ours, theirs, strict=True):
        per_class.append({
            "class_id": mine.get("class_id"),
            "name": mine["name"],
            "images": mine.get("images"),
            "instances": mine.get("instances"),
            "challenger": {k: mine.get(k) for k in ("AP50", "AP50-95")},
            "champion": {k: other.get(k) for k in ("AP50", "AP50-95")},
            "delta": {k: _delta(mine.get(k), other.get(k)) for k in ("AP50", "AP50-95")},
        })
    return {
        "schema_version": COMPARISON_SCHEMA_VERSION,
        "challenger": {"version": challenger["version"],
                       "metrics": {k: challenger["metrics"].get(k) for k in METRICS}},
        "champion": {"version": champion["version"],
                     "metrics": {k: champion["metrics"].get(k) for k in METRICS}},
        "deltas": {k: _delta(challenger["metrics"].get(k), champion["metrics"].get(k))
                   for k in METRICS},
        "per_class": per_class,
    }


def decide(
    comparison: Mapping[str, Any],
    policy: PromotePolicy,
    *,
    gates: Mapping[str, Mapping[str, Any]] | None = None,
    export_formats: Sequence[str] = (),
) -> Verdict:
    """Apply every rule of ``policy``; the challenger wins only when all of them hold.

    Args:
        comparison: what :func:`compare` returned.
        policy: the job spec's ``promote`` section.
        gates: the challenger manifest's export gates (format key → {status, reason}).
        export_formats: the formats its spec asked for (empty: no export section).
    """
    champion = comparison["champion"]["version"]
    challenger = comparison["challenger"]["version"]
    gain = comparison["deltas"]["mAP50-95"]
    rules = [RuleResult(
        "min_map50_95_gain", gain is not None and gain >= policy.min_map50_95_gain, gain,
        policy.min_map50_95_gain,
        f"mAP50-95 {_signed(gain)} (needs {_signed(policy.min_map50_95_gain)} or more)")]
    judged = [row for row in comparison["per_class"] if row["delta"]["AP50-95"] is not None]
    worst = min(judged, key=lambda row: row["delta"]["AP50-95"], default=None)
    worst_drop = worst["delta"]["AP50-95"] if worst else None
    if policy.max_class_ap50_95_drop is not None:
        held = worst_drop is None or -worst_drop <= policy.max_class_ap50_95_drop
        rules.append(RuleResult(
            "max_class_ap50_95_drop", held, worst_drop, policy.max_class_ap50_95_drop,
            f"worst class {worst['name']!r} AP50-95 {_signed(worst_drop)} (may drop at most "
            f"{policy.max_class_ap50_95_drop:.3f})" if worst else "no class has instances"))
    if policy.min_test_images_per_class:
        rarest = min(comparison["per_class"], key=lambda row: row.get("images") or 0)
        images = int(rarest.get("images") or 0)
        rules.append(RuleResult(
            "min_test_images_per_class", images >= policy.min_test_images_per_class, images,
            policy.min_test_images_per_class,
            f"class {rarest['name']!r} is in {images} held-out image(s) (needs "
            f"{policy.min_test_images_per_class})"))
    if policy.require_export_gates and export_formats:
        failed = sorted(key for key, gate in (gates or {}).items()
                        if gate.get("status") != "passed")
        missing = sorted(fmt for fmt in export_formats
                         if not any(key.startswith(fmt) for key in (gates or {})))
        rules.append(RuleResult(
            "require_export_gates", not failed and not missing, None, None,
            "every export gate passed" if not failed and not missing else
            "export gates not passed: " + ", ".join(
                [f"{k} {(gates or {})[k].get('status')}" for k in failed]
                + [f"{m} not exported" for m in missing])))
    promote = all(rule.passed for rule in rules)
    worst_text = (f", worst class {_signed(worst_drop)}" if worst_drop is not None else "")
    if promote:
        summary = (f"promoted {champion} → {challenger} ({_signed(gain)} mAP50-95"
                   f"{worst_text})")
    else:
        summary = f"kept {champion}: " + "; ".join(
            _failure(rule, worst) for rule in rules if not rule.passed)
    return Verdict(promote, summary, rules)


def first_version(version: str, alias: str) -> Verdict:
    """The verdict for a model's first version: it takes the alias with nothing to beat."""
    return Verdict(True, f"promoted {version} to {alias}: the model's first version", [])


def _failure(rule: RuleResult, worst: Mapping[str, Any] | None) -> str:
    if rule.rule == "max_class_ap50_95_drop" and worst is not None and rule.figure is not None:
        return (f"class {worst['name']!r} dropped {-rule.figure:.3f} > "
                f"{rule.limit:.3f} AP50-95")
    if rule.rule == "min_map50_95_gain":
        return f"mAP50-95 {_signed(rule.figure)} < {_signed(rule.limit)} required"
    return rule.message


def _delta(new: Any, old: Any) -> float | None:
    if isinstance(new, int | float) and isinstance(old, int | float):
        return round(float(new) - float(old), 6)
    return None


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"
