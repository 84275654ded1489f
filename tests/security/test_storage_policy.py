"""The storage access policy's checks (trainforge/access.py), case by case.

Two teams, ``vision`` and ``retail``, share a dataset bucket by prefix; every trick that could
make one prefix read as another (traversal, encodings, doubled slashes, bucket-name look-alikes,
symlinks) is refused, as are trainforge's own stores and, outside embedded mode, local paths.
The end-to-end refusals (API, schedules, the job) are in test_storage_boundaries.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainforge.access import AccessRules, StoragePolicy, TeamAccess, embedded_policy
from trainforge.errors import AccessDenied, LocationInvalid, SpecError
from trainforge.spec import parse_spec

POLICY = StoragePolicy(teams={
    "vision": TeamAccess(datasets=("s3://data/vision/",), weights=("s3://weights/vision",)),
    "retail": TeamAccess(datasets=("s3://data/retail/",)),
})
RESERVED = {"artifacts store": "s3://tf-artifacts/prod", "models store": "s3://tf-models"}


def rules(team: str, *, local: bool = False, policy: StoragePolicy = POLICY,
          reserved: dict[str, str] | None = None) -> AccessRules:
    return AccessRules.build(team, policy.for_team(team), local_paths=local,
                             reserved=RESERVED if reserved is None else reserved)


@pytest.mark.parametrize("uri", [
    "s3://data/retail/",
    "s3://data/retail",  # the prefix itself, without its slash
    "s3://data/retail/ppe/v3/",
    "s3://data/retail/ppe/v3",
])
def test_a_team_reads_under_its_own_prefixes(uri: str) -> None:
    assert rules("retail").dataset(uri) == uri


@pytest.mark.parametrize("uri", [
    "s3://data/vision/ppe/",  # another team's prefix
    "s3://data/retail-old/ppe/",  # a prefix that only starts like ours
    "s3://data/retailppe/",
    "s3://data/",  # the bucket above our prefix
    "s3://other/retail/ppe/",  # the same path in another bucket
    "s3://data.evil/retail/",  # a bucket-name look-alike
])
def test_another_prefix_is_refused_naming_only_what_is_allowed(uri: str) -> None:
    with pytest.raises(AccessDenied) as refused:
        rules("retail").dataset(uri)
    # What would be allowed, and nothing about anybody else's prefixes or what exists.
    assert refused.value.message == (f"dataset.uri: team 'retail' may not read {uri}; "
                                     "allowed prefixes: s3://data/retail/")


@pytest.mark.parametrize("uri", [
    "s3://data/retail/../vision/ppe/",
    "s3://data/retail/./../vision/",
    "s3://data/retail//vision/",
    "s3://data/retail/%2e%2e/vision/",
    "s3://data/retail/%2E%2E%2Fvision/",
    "s3://data/retail/..%2fvision/",
    "s3://DATA/retail/",  # bucket names compare exactly: no case folding
    "s3://Data/retail/",
    "s3://data/retail\\..\\vision/",
    "s3://data/retail/ppe/?prefix=vision/",
    "s3://data/retail/ppe/#../vision",
    "s3://data/retail/\x00/vision/",
    "s3://data/retail/\n",
    " s3://data/retail/",
    "s3:///retail/",
])
def test_ambiguous_spellings_are_refused_before_any_comparison(uri: str) -> None:
    with pytest.raises(LocationInvalid):
        rules("retail").dataset(uri)


@pytest.mark.parametrize("uri", [
    "s3://tf-artifacts/prod/jobs/j1/",  # other jobs' specs, logs, checkpoints
    "s3://tf-artifacts/prod/",
    "s3://tf-artifacts/",  # a location that contains the store
    "s3://tf-models/vision/detector/1/",
])
def test_trainforges_own_stores_are_never_data_whatever_the_policy_says(uri: str) -> None:
    lax = StoragePolicy(default=TeamAccess(datasets=("s3://tf-artifacts/", "s3://tf-models/")))
    with pytest.raises(AccessDenied, match="trainforge's own"):
        rules("retail", policy=lax).dataset(uri)


def test_weights_follow_their_own_prefixes_and_registry_refs_need_none() -> None:
    vision = rules("vision")
    assert vision.weights("s3://weights/vision/yolo/best.pt") == \
        "s3://weights/vision/yolo/best.pt"
    with pytest.raises(AccessDenied):
        vision.weights("s3://data/vision/best.pt")  # a dataset prefix is not a weights prefix
    with pytest.raises(AccessDenied, match="registry://"):
        vision.weights("s3://tf-models/vision/detector/1/best.pt")
    assert vision.weights("registry://detector@j123") is None
    assert vision.weights("yolov8n.pt") is None and vision.weights("yolov8n.yaml") is None
    for bad in ("registry://../retail/detector@1", "registry://Detector@1",
                "registry://detector@../../x", "yolov8n.pt\x00"):
        with pytest.raises(LocationInvalid):
            vision.weights(bad)


@pytest.mark.parametrize("base", ["/etc/passwd.pt", "/root/.trainforge/models/x.pt",
                                  "file:///srv/weights/best.pt", "../best.pt"])
def test_local_weights_and_datasets_are_refused_outside_embedded_mode(base: str) -> None:
    open_local = StoragePolicy(default=TeamAccess(datasets=("file:///",), weights=("file:///",)))
    with pytest.raises((AccessDenied, LocationInvalid)):
        rules("retail", policy=open_local).weights(base)
    with pytest.raises((AccessDenied, LocationInvalid)):
        rules("retail", policy=open_local).dataset(base.removesuffix("best.pt"))


def test_embedded_mode_lets_the_local_team_read_local_paths_only_outside_trainforges_home(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    (home / "artifacts").mkdir(parents=True)
    (home / "secret-key").write_text("s")
    data = tmp_path / "data"
    (data / "ds").mkdir(parents=True)
    reserved = {"artifacts store": f"file://{home}/artifacts", "home directory": f"file://{home}"}
    dev = rules("dev", local=True, policy=embedded_policy(), reserved=reserved)
    assert dev.dataset(f"file://{data}/ds/") == f"file://{data}/ds/"
    assert dev.dataset(f"{data}/ds") == f"file://{data}/ds"
    for inside in (f"file://{home}/", f"{home}/secret-key", f"file://{home}/artifacts/jobs/",
                   f"file://{tmp_path}/", "file:///"):
        with pytest.raises(AccessDenied, match="trainforge's own"):
            dev.dataset(inside)
    # A symlink inside an allowed tree that points into the home is followed, then refused.
    os.symlink(home, data / "link")
    with pytest.raises(AccessDenied, match="trainforge's own"):
        dev.dataset(f"file://{data}/link/")
    for tricky in (f"file://{data}/ds/../../home/", f"file://{data}/%2e%2e/home/",
                   f"file://localhost{data}/ds/", "data/ds", f"file://{data}//ds/"):
        with pytest.raises(LocationInvalid):
            dev.dataset(tricky)
    # Other teams of the embedded server read no local path at all.
    with pytest.raises(AccessDenied, match="no datasets location"):
        rules("retail", local=True, policy=embedded_policy(), reserved=reserved).dataset(
            f"file://{data}/ds/")


def test_the_job_spec_refuses_ambiguous_locations_with_the_field_path() -> None:
    base = {"name": "ppe", "dataset": {"uri": "s3://data/retail/ppe/"}}
    parse_spec(base)
    for field, value in (("dataset", {"uri": "s3://data/retail/../vision/"}),
                         ("dataset", {"uri": "s3://data/retail/%2e%2e/"}),
                         ("dataset", {"uri": "s3://data/\x00/"}),
                         ("model", {"base": "registry://../vision/x@1"}),
                         ("model", {"base": "/etc/../x.pt"}),
                         ("model", {"base": "weights/x.pt"})):
        with pytest.raises(SpecError, match=f"^{field}\\."):
            parse_spec({**base, field: value})


def test_rules_travel_to_the_job_as_the_teams_own_rules_only() -> None:
    sent = rules("retail").to_env()
    assert "vision" not in sent and "s3://data/vision/" not in sent
    received = AccessRules.from_env(sent, reserved=RESERVED)
    assert received == rules("retail")
    with pytest.raises(LocationInvalid):
        AccessRules.from_env("{not json", reserved=RESERVED)
