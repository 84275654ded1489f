"""Nothing a dataset carries is executed or unpickled: not a ``download:`` key, not a planted
``labels.cache``/``.npy``/``.pkl``; and nothing outside the dataset root is read or copied."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.datasets.corpus import _Planted, planted_pickle
from tests.fixtures.s3 import upload_tree
from trainforge.datasets import (
    dataset_stats,
    fingerprint,
    load_data_yaml,
    preview,
    sync,
    validate,
    write_local_data_yaml,
)
from trainforge.errors import DatasetUnsafe
from trainforge.storage import S3Store


def _download_payloads(sentinel: Path) -> list[str]:
    # Ultralytics runs `bash …` strings with os.system and anything else with exec().
    return [
        f"import pathlib; pathlib.Path({str(sentinel)!r}).write_text('downloaded')",
        f"bash -c 'touch {sentinel}'",
    ]


@pytest.mark.parametrize("which", [0, 1], ids=["python", "bash"])
def test_download_key_is_ignored_never_run(
    dataset: Path, tmp_path: Path, which: int
) -> None:
    sentinel = tmp_path / "DOWNLOAD-RAN"
    payload = _download_payloads(sentinel)[which]
    doc = yaml.safe_load((dataset / "data.yaml").read_text())
    doc["download"] = payload
    (dataset / "data.yaml").write_text(yaml.safe_dump(doc))

    report = validate(dataset)
    assert report.ok and "data_yaml_download_ignored" in {p.code for p in report.warnings}
    assert load_data_yaml(dataset).names == list(doc["names"].values())
    written = write_local_data_yaml(dataset, tmp_path / "out" / "data.yaml")
    assert "download" not in yaml.safe_load(written.read_text())  # what Ultralytics reads
    synced = sync(dataset, tmp_path / "cache")
    assert validate(synced.path).ok
    dataset_stats(dataset)
    preview(dataset, tmp_path / "preview", n=2)
    assert not sentinel.exists()

    # Control: the payload is live, so the absence above is meaningful.
    if which == 0:
        exec(payload, {})
    else:
        assert os.system(payload) == 0
    assert sentinel.exists()


def test_planted_pickles_are_never_loaded(
    dataset: Path, tmp_path: Path, s3_bucket: str, s3_server: str
) -> None:
    sentinel = tmp_path / "UNPICKLED"
    blob = planted_pickle(sentinel)
    (dataset / "train" / "labels.cache").write_bytes(blob)
    (dataset / "val" / "labels.cache").write_bytes(blob)
    (dataset / "train" / "images" / "evil.pkl").write_bytes(blob)
    np.save(dataset / "train" / "images" / "train_00000.npy",
            np.array([_Planted(str(sentinel))], dtype=object), allow_pickle=True)
    upload_tree(S3Store(s3_bucket, endpoint_url=s3_server), dataset, "ds")

    for uri in (str(dataset), f"s3://{s3_bucket}/ds"):
        for decode in (True, False):
            report = validate(uri, decode=decode)
            assert report.ok, report.format_text()
            ignored = {p.file for p in report.problems if p.code == "cache_file_ignored"}
            assert ignored == {"train/labels.cache", "val/labels.cache",
                               "train/images/evil.pkl", "train/images/train_00000.npy"}
        fingerprint(uri)
        dataset_stats(uri)
        preview(uri, tmp_path / "preview", n=3)
        synced = sync(uri, tmp_path / "cache")
        names = {p.name for p in synced.path.rglob("*")}
        assert not names & {"labels.cache", "evil.pkl", "train_00000.npy"}
        write_local_data_yaml(synced.path, tmp_path / "local.yaml")
    load_data_yaml(dataset)
    assert not sentinel.exists()

    # Control: unpickling the planted file does write the sentinel.
    pickle.loads(blob)
    assert sentinel.read_text() == "unpickled"


def test_excluded_files_do_not_change_the_fingerprint(dataset: Path) -> None:
    before = fingerprint(dataset)
    (dataset / "train" / "labels.cache").write_bytes(b"anything")
    assert fingerprint(dataset) == before


def test_symlinks_leaving_the_root_are_refused(dataset: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("0 0.5 0.5 0.2 0.2\n")
    (dataset / "train" / "labels" / "train_00000.txt").unlink()
    (dataset / "train" / "labels" / "train_00000.txt").symlink_to(secret)
    report = validate(dataset)
    assert [p.file for p in report.errors] == ["train/labels/train_00000.txt"]
    assert report.errors[0].code == "symlink_escape"
    with pytest.raises(DatasetUnsafe, match="train_00000.txt"):
        fingerprint(dataset)
    with pytest.raises(DatasetUnsafe):
        sync(dataset, tmp_path / "cache")
    assert not any((tmp_path / "cache").glob("[0-9a-f]*"))


def test_symlinks_inside_the_root_are_followed(dataset: Path) -> None:
    # An in-root link (a shared image kept once) is fine: the trainer reads the same bytes.
    target = dataset / "train" / "images" / "train_00000.png"
    link = dataset / "train" / "images" / "linked.png"
    link.symlink_to(target)
    (dataset / "train" / "labels" / "linked.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    report = validate(dataset)
    assert report.ok
    assert report.splits["train"].images == 7
    assert "image_duplicate" in report.codes()


def test_decompression_bomb_is_refused_from_the_header(dataset: Path) -> None:
    from tests.datasets.corpus import png_header

    bomb = png_header(60_000, 60_000)  # 3.6 gigapixels, 10 GB once decoded
    (dataset / "train" / "images" / "train_00000.png").write_bytes(bomb)
    report = validate(dataset, decode=True)
    [p] = [p for p in report.errors if p.file == "train/images/train_00000.png"]
    # The IDAT is garbage: had it been decoded the code would be image_corrupt.
    assert p.code == "image_too_large"
    assert "60000x60000 px (3600 MP)" in p.message
