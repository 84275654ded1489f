"""The promotion verdict (trainforge/promotion.py): each rule, its figures and its wording.

These are the decision's arithmetic on given evaluations; tests/train/test_promote_models.py
runs the same decision on real models evaluated on a real split.
"""

from __future__ import annotations

from typing import Any

import pytest

from trainforge.promotion import NotComparable, compare, decide
from trainforge.spec import PromotePolicy, parse_spec


def _side(version: str, aps: dict[str, float], *, images: int = 10) -> dict[str, Any]:
    per_class = [{"class_id": i, "name": name, "images": images, "instances": images,
                  "AP50": min(1.0, ap + 0.2), "AP50-95": ap} for i, (name, ap) in
                 enumerate(aps.items())]
    mean = sum(aps.values()) / len(aps)
    return {"version": version, "per_class": per_class,
            "metrics": {"mAP50": min(1.0, mean + 0.2), "mAP50-95": mean,
                        "precision": 0.8, "recall": 0.7}}


CHAMPION = _side("v1", {"helmet": 0.50, "vest": 0.40})


def test_a_better_challenger_is_promoted_with_its_figures() -> None:
    comparison = compare(_side("v2", {"helmet": 0.56, "vest": 0.46}), CHAMPION)
    verdict = decide(comparison, PromotePolicy())
    assert verdict.promote
    assert verdict.summary == "promoted v1 → v2 (+0.060 mAP50-95, worst class +0.060)"
    assert comparison["deltas"]["mAP50-95"] == pytest.approx(0.06)
    assert [row["delta"]["AP50-95"] for row in comparison["per_class"]] == \
        pytest.approx([0.06, 0.06])


def test_a_worse_challenger_is_kept_out() -> None:
    verdict = decide(compare(_side("v2", {"helmet": 0.45, "vest": 0.40}), CHAMPION),
                     PromotePolicy())
    assert not verdict.promote
    assert verdict.summary.startswith("kept v1: mAP50-95 -0.025 < +0.000 required")


def test_better_overall_but_one_class_regressed_names_that_class() -> None:
    challenger = _side("v2", {"helmet": 0.80, "vest": 0.35})  # +0.125 overall, vest -0.05
    verdict = decide(compare(challenger, CHAMPION), PromotePolicy(max_class_ap50_95_drop=0.02))
    assert not verdict.promote
    assert "class 'vest' dropped 0.050 > 0.020 AP50-95" in verdict.summary
    failed = [r for r in verdict.rules if not r.passed]
    assert [r.rule for r in failed] == ["max_class_ap50_95_drop"]
    assert failed[0].figure == pytest.approx(-0.05)
    # Without the per-class rule (null), the same challenger wins.
    assert decide(compare(challenger, CHAMPION), PromotePolicy(max_class_ap50_95_drop=None)).promote


def test_a_tie_passes_at_zero_and_a_small_loss_passes_when_allowed() -> None:
    tie = compare(_side("v2", {"helmet": 0.50, "vest": 0.40}), CHAMPION)
    assert decide(tie, PromotePolicy(min_map50_95_gain=0.0)).promote
    assert not decide(tie, PromotePolicy(min_map50_95_gain=0.01)).promote
    loss = compare(_side("v2", {"helmet": 0.49, "vest": 0.40}), CHAMPION)
    assert decide(loss, PromotePolicy(min_map50_95_gain=-0.01)).promote


def test_too_few_held_out_images_refuses_to_decide() -> None:
    comparison = compare(_side("v2", {"helmet": 0.9, "vest": 0.9}, images=3),
                         _side("v1", {"helmet": 0.1, "vest": 0.1}, images=3))
    verdict = decide(comparison, PromotePolicy(min_test_images_per_class=5))
    assert not verdict.promote
    assert "is in 3 held-out image(s) (needs 5)" in verdict.summary


def test_export_gates_must_have_passed_when_required() -> None:
    comparison = compare(_side("v2", {"helmet": 0.9, "vest": 0.9}), CHAMPION)
    gates = {"onnx": {"status": "passed"}, "engine-fp16": {"status": "skipped"}}
    verdict = decide(comparison, PromotePolicy(), gates=gates, export_formats=["onnx", "engine"])
    assert not verdict.promote
    assert "engine-fp16 skipped" in verdict.summary
    assert decide(comparison, PromotePolicy(require_export_gates=False), gates=gates,
                  export_formats=["onnx", "engine"]).promote
    assert decide(comparison, PromotePolicy(), gates={"onnx": {"status": "passed"}},
                  export_formats=["onnx"]).promote
    missing = decide(comparison, PromotePolicy(), gates={}, export_formats=["onnx"])
    assert not missing.promote and "onnx not exported" in missing.summary


def test_versions_with_other_classes_are_not_comparable() -> None:
    with pytest.raises(NotComparable, match="different classes"):
        compare(_side("v2", {"helmet": 0.9, "boots": 0.9}), CHAMPION)


def test_a_class_absent_from_the_split_is_not_judged() -> None:
    challenger = _side("v2", {"helmet": 0.6, "vest": 0.5})
    champion = _side("v1", {"helmet": 0.5, "vest": 0.4})
    for side in (challenger, champion):
        side["per_class"][1].update({"AP50": None, "AP50-95": None, "images": 0})
    verdict = decide(compare(challenger, champion), PromotePolicy())
    assert verdict.promote, verdict.summary


@pytest.mark.parametrize("policy, message", [
    ({"alias": "latest"}, "reads as a version"),
    ({"alias": "Champion"}, "String should match pattern"),
    ({"min_map50_95_gain": 2}, "less than or equal to 1"),
    ({"max_class_ap50_95_drop": -0.1}, "greater than or equal to 0"),
    ({"min_test_images_per_class": -1}, "greater than or equal to 0"),
    ({"surprise": 1}, "unknown key 'surprise'"),
])
def test_the_promote_section_is_typed_and_bounded(policy: dict[str, Any], message: str) -> None:
    from trainforge.errors import SpecError

    with pytest.raises(SpecError, match=message):
        parse_spec({"name": "ppe", "dataset": {"uri": "s3://data/ppe/"}, "promote": policy})


def test_an_export_job_has_no_promote_section() -> None:
    from trainforge.errors import SpecError

    with pytest.raises(SpecError, match="promote section needs a job that trains"):
        parse_spec({"kind": "export", "name": "ppe", "dataset": {"uri": "s3://data/ppe/"},
                    "model": {"base": "registry://ppe@champion"}, "export": {},
                    "promote": {}})
