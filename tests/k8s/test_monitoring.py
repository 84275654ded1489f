"""Alert rules (promtool check + promtool unit tests) and the Grafana dashboard.

Both may only use the metric names every trainforge process agreed on (the list below, which
mirrors the shared metric names of the project brief); a renamed metric breaks an alert silently,
so this is checked, and every dashboard query is syntax-checked by promtool.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.kubecheck.paths import REPO, find_tool

RULES = REPO / "infra" / "prometheus" / "rules.yaml"
RULES_TEST = REPO / "infra" / "prometheus" / "rules.test.yaml"
DASHBOARD = REPO / "infra" / "grafana" / "trainforge.json"
OPERATIONS = REPO / "docs" / "operations.md"

#: The shared metric names (name → type). Histograms also expose _bucket, _count and _sum.
METRICS: dict[str, str] = {
    "trainforge_jobs_submitted_total": "counter",
    "trainforge_jobs": "gauge",
    "trainforge_job_queue_wait_seconds": "histogram",
    "trainforge_job_duration_seconds": "histogram",
    "trainforge_jobs_finished_total": "counter",
    "trainforge_http_request_duration_seconds": "histogram",
    "trainforge_dispatcher_errors_total": "counter",
    "trainforge_dispatcher_last_loop_timestamp_seconds": "gauge",
    "trainforge_scheduler_leader": "gauge",
    "trainforge_schedule_runs_total": "counter",
    "trainforge_export_duration_seconds": "gauge",
    "trainforge_export_last_success_timestamp_seconds": "gauge",
    "trainforge_export_artifact_bytes": "gauge",
    "trainforge_export_map_delta": "gauge",
    "trainforge_export_latency_seconds": "gauge",
    "trainforge_export_gate_passed": "gauge",
    "trainforge_webhook_attempts_total": "counter",
    "trainforge_webhooks_disabled_total": "counter",
    "trainforge_webhook_deliveries_pending": "gauge",
    "trainforge_webhook_oldest_pending_seconds": "gauge",
}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
             "group_right", "bool", "offset", "inf", "nan"}


def known_series() -> set[str]:
    names = set(METRICS)
    for name, kind in METRICS.items():
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (a small lexer, enough for our queries)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word, rest = match.group(0), text[match.end():].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function or an operator
        if re.fullmatch(r"\d+[smhdwy]", word) or text[match.start() - 1: match.start()].isdigit():
            continue
        names.add(word)
    return names


def rule_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r.get("alert") or r.get("record"), r["expr"]) for g in groups for r in g["rules"]]


def dashboard_exprs() -> list[tuple[str, str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(p["title"], t["expr"]) for p in panels for t in p.get("targets", [])]


def promtool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_tool("promtool"), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    proc = promtool("check", "rules", str(RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_promtool_unit_tests_of_the_alerts() -> None:
    proc = promtool("test", "rules", RULES_TEST.name, cwd=RULES_TEST.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    alerts = {name for name, _ in rule_exprs()}
    assert alerts - fired == set()


def test_the_lexer_finds_metric_names() -> None:
    expr = ('histogram_quantile(0.95, sum by (kind, le) (rate(foo_bucket{a="b{c}"}[5m])))'
            ' / on () bar offset 5m > 0.5 and time() - baz')
    assert metric_names(expr) == {"foo_bucket", "bar", "baz"}


@pytest.mark.parametrize(("name", "expr"), rule_exprs())
def test_alert_rules_use_only_shared_metric_names(name: str, expr: str) -> None:
    assert metric_names(expr) - known_series() == set(), name


@pytest.mark.parametrize(("title", "expr"), dashboard_exprs())
def test_dashboard_queries_use_only_shared_metric_names(title: str, expr: str) -> None:
    assert metric_names(expr) - known_series() == set(), title


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every query (as recording rules; Grafana's $__ variables filled in)."""
    rules = [{"record": f"trainforge:dashboard_query_{i}",
              "expr": expr.replace("$__rate_interval", "5m").replace("$__range", "1h")}
             for i, (_, expr) in enumerate(dashboard_exprs())]
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    proc = promtool("check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_shape() -> None:
    dash: dict[str, Any] = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["templating"]["list"][0]["type"] == "datasource"
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["description"]
    used = {m for _, e in dashboard_exprs() for m in metric_names(e)}
    covered = {m.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for m in used}
    assert set(METRICS) - covered == set(), "every shared metric has a panel"


def test_alerts_are_labelled_and_their_runbooks_exist() -> None:
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in OPERATIONS.read_text().splitlines() if line.startswith("#")}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical")
            notes = rule["annotations"]
            assert notes["summary"] and notes["description"]
            anchor = notes["runbook"].split("#", 1)[1]
            assert notes["runbook"].startswith("docs/operations.md#") and anchor in headings, (
                f"{rule['alert']}: no heading for #{anchor} in docs/operations.md")
