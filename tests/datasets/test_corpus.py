"""Every rule refuses its broken dataset with the right code, file and line: through the
Python API (local directory and the loopback S3 server) and through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.datasets.corpus import CASES, Case
from trainforge.datasets import ValidationReport, validate

ROOT = Path(__file__).resolve().parents[2]
S3_CASES = [c for c in CASES if not c.local_only]


def test_corpus_is_big_enough() -> None:
    errors = {c.code for c in CASES if c.severity == "error"}
    assert len([c for c in CASES if c.severity == "error"]) >= 25
    assert len(errors) >= 20


def test_base_dataset_is_valid_without_warnings(base_dataset: Path) -> None:
    report = validate(base_dataset)
    assert report.ok, report.format_text()
    assert report.warnings == [], report.format_text()


def check(case: Case, report: ValidationReport | dict[str, object]) -> None:
    data = report.to_dict() if isinstance(report, ValidationReport) else report
    problems = data["problems"]
    assert isinstance(problems, list)
    text = "\n".join(f"{p['severity']} {p['file']}:{p['line']} [{p['code']}] {p['message']}"
                     for p in problems)
    hits = [p for p in problems if p["code"] == case.code]
    assert hits, f"{case.id}: no {case.code} in\n{text}"
    assert any(p["file"] == case.file and (case.line is None or p["line"] == case.line)
               for p in hits), f"{case.id}: {case.code} not at {case.file}:{case.line}\n{text}"
    assert all(p["severity"] == case.severity for p in hits)
    assert all(p["message"] for p in hits)
    errors = {p["code"] for p in problems if p["severity"] == "error"}
    if case.severity == "error":
        assert data["ok"] is False
        assert errors <= {case.code} | case.also, f"{case.id}: unexpected errors\n{text}"
    else:
        assert data["ok"] is True, f"{case.id}: a warning case must stay valid\n{text}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_corpus_local(case: Case, corpus: dict[str, Path]) -> None:
    check(case, validate(corpus[case.id], decode=True))
    if not case.needs_decode:
        check(case, validate(corpus[case.id], decode=False))


@pytest.mark.parametrize("case", S3_CASES, ids=lambda c: c.id)
def test_corpus_s3(case: Case, s3_corpus: str) -> None:
    check(case, validate(f"s3://{s3_corpus}/{case.id}/", decode=case.needs_decode))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "trainforge", "dataset", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cli_results(corpus: dict[str, Path]) -> dict[str, subprocess.CompletedProcess[str]]:
    # One interpreter per case, four at a time: the corpus runs through the real entrypoint.
    with ThreadPoolExecutor(4) as pool:
        runs = pool.map(lambda c: (c.id, _cli("validate", str(corpus[c.id]), "--json")), CASES)
        return dict(runs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_corpus_cli(case: Case, cli_results: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = cli_results[case.id]
    assert run.returncode == (1 if case.severity == "error" else 0), run.stderr
    check(case, json.loads(run.stdout))


def test_cli_text_output_names_file_line_and_fix(corpus: dict[str, Path]) -> None:
    run = _cli("validate", str(corpus["label_class_out_of_range"]))
    assert run.returncode == 1
    assert ("ERROR train/labels/train_00001.txt:2 [label_class_out_of_range] class 7 is not in "
            "0..1 (nc=2): fix the class id or add the class to names") in run.stdout
    assert "INVALID" in run.stdout and "train" in run.stdout


def test_cli_exit_codes_valid_and_usage(base_dataset: Path, tmp_path: Path) -> None:
    ok = _cli("validate", str(base_dataset))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VALID" in ok.stdout
    missing = _cli("validate", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "dataset_not_found" in missing.stderr
    bad_option = _cli("validate", str(base_dataset), "--workers", "0")
    assert bad_option.returncode == 2
    no_arg = _cli("validate")
    assert no_arg.returncode == 2
    scheme = _cli("validate", "ftp://host/ds")
    assert scheme.returncode == 2 and "unsupported storage URI" in scheme.stderr


def test_s3_unsafe_key_is_reported(s3_bucket: str, s3_server: str, base_dataset: Path) -> None:
    import boto3

    from tests.fixtures.s3 import upload_tree
    from trainforge.storage import S3Store

    upload_tree(S3Store(s3_bucket, endpoint_url=s3_server), base_dataset, "ds")
    boto3.client("s3", endpoint_url=s3_server).put_object(
        Bucket=s3_bucket, Key="ds/train/images/../../escape.png", Body=b"x")
    report = validate(f"s3://{s3_bucket}/ds", decode=False)
    assert not report.ok
    assert [p.file for p in report.errors if p.code == "unsafe_key"] == [
        "train/images/../../escape.png"]


def test_problem_lists_are_capped_but_counted(dataset: Path) -> None:
    from trainforge.datasets.report import MAX_PER_CODE

    bad = "".join(f"9 0.5 0.5 0.1 0.{i % 9 + 1}\n" for i in range(MAX_PER_CODE + 50))
    (dataset / "train/labels/train_00000.txt").write_text(bad)
    report = validate(dataset)
    listed = [p for p in report.problems if p.code == "label_class_out_of_range"]
    assert len(listed) == MAX_PER_CODE and report.omitted == {"label_class_out_of_range": 50}
    assert report.to_dict()["counts"]["label_class_out_of_range"] == MAX_PER_CODE + 50
    assert not report.ok
    assert "… and 50 more like this" in report.format_text()

