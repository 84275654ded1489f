"""Base weights: URIs are fetched, YAMLs pass through, unreachable stock names say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.core.weights import resolve_weights
from trainforge.errors import WeightsError
from trainforge.registry import publish


def test_yaml_means_from_scratch(tmp_path: Path) -> None:
    assert resolve_weights("yolov8n.yaml", tmp_path, models_uri=f"file://{tmp_path}") == (
        "yolov8n.yaml"
    )


def test_file_and_registry_refs_are_downloaded(tmp_path: Path) -> None:
    src = tmp_path / "src" / "best.pt"
    src.parent.mkdir()
    src.write_bytes(b"weights")
    local = resolve_weights(f"file://{src}", tmp_path / "w1", models_uri=f"file://{tmp_path}/m")
    assert Path(local).read_bytes() == b"weights"
    publish(f"file://{tmp_path}/m", "ppe", "v1", {"best.pt": src}, {})
    local = resolve_weights("registry://ppe@latest", tmp_path / "w2",
                            models_uri=f"file://{tmp_path}/m")
    assert Path(local).read_bytes() == b"weights"


def test_missing_uri_names_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="cannot fetch base weights file://.*nope.pt"):
        resolve_weights(f"file://{tmp_path}/nope.pt", tmp_path, models_uri=f"file://{tmp_path}")


def test_offline_stock_name_says_to_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError, match="mirror them into your bucket"):
        resolve_weights("yolov8x-nonexistent.pt", tmp_path / "w", models_uri=f"file://{tmp_path}")


def test_a_stock_name_comes_from_the_weights_cache_without_a_download(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "yolov8n.pt").write_bytes(b"cached weights")
    local = resolve_weights("yolov8n.pt", tmp_path / "w", models_uri=f"file://{tmp_path}",
                            weights_cache=cache)
    # The job's own copy: its checks and Ultralytics never read the shared cache in place.
    assert Path(local) == tmp_path / "w" / "yolov8n.pt"
    assert Path(local).read_bytes() == b"cached weights"


def test_a_stock_name_nowhere_says_where_the_cache_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsError) as info:
        resolve_weights("yolov8x-nonexistent.pt", tmp_path / "w",
                        models_uri=f"file://{tmp_path}", weights_cache=tmp_path / "cache")
    assert "use yolov8x-nonexistent.yaml to train from scratch, a local .pt" in str(info.value)
    assert f"put the weights in {tmp_path}/cache/yolov8x-nonexistent.pt" in str(info.value)
