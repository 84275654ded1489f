"""Malformed job specs are 422s naming the field, over a real connection (never a 500 or a
dropped connection): unhashable export formats, control characters in locations.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

EXPORT_SPEC: dict[str, Any] = {
    "kind": "export",
    "name": "ppe-detector",
    "dataset": {"uri": "s3://datasets/ppe/v3/"},
    "model": {"base": "s3://models/ppe/best.pt"},
}


def _post_both(url: str, headers: dict[str, str], spec: dict[str, Any]) -> list[httpx.Response]:
    """The spec sent to POST /v1/jobs and as a template to POST /v1/schedules."""
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        return [client.post("/v1/jobs", json={"spec": spec}),
                client.post("/v1/schedules", json={"spec": spec, "cron": "0 3 * * *"})]


@pytest.mark.parametrize("formats", [
    [["onnx"]],
    [{"format": "onnx"}],
    ["onnx", {"a": [1, 2]}],
    [[]],
])
def test_unhashable_export_formats_are_422_naming_the_field(
    live_url: str, auth: dict[str, str], formats: list[Any],
) -> None:
    spec = {**EXPORT_SPEC, "export": {"formats": formats}}
    for response in _post_both(live_url, auth, spec):
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["code"] == "validation_failed"
        paths = {e["path"]: e["message"] for e in body["errors"]}
        assert "spec.export.formats" in paths, body
        assert "trainforge exports: engine, onnx" in paths["spec.export.formats"]
        assert "unsupported export format" in paths["spec.export.formats"]


def test_valid_and_misspelt_export_formats_still_behave(
    live_url: str, auth: dict[str, str],
) -> None:
    ok = _post_both(live_url, auth, {**EXPORT_SPEC, "export": {"formats": ["onnx", "engine"]}})
    assert [r.status_code for r in ok] == [201, 201], [r.text for r in ok]
    bad = _post_both(live_url, auth, {**EXPORT_SPEC, "export": {"formats": ["tflite"]}})
    assert all(r.status_code == 422 and "tflite" in r.json()["detail"] for r in bad)


@pytest.mark.parametrize("char", ["\x00", "\n", "\x1f", "\x7f", "\x85", "\u2028", "\u202e",
                                  "\u2069"])
@pytest.mark.parametrize(("field", "spec"), [
    ("dataset.uri", {"dataset": {"uri": "s3://datasets/ppe{c}/v3/"}}),
    ("dataset.uri", {"dataset": {"uri": "file:///data/ppe{c}/"}}),
    ("model.base", {"dataset": {"uri": "s3://datasets/ppe/v3/"},
                    "model": {"base": "yolov8n{c}.pt"}}),
    ("model.base", {"dataset": {"uri": "s3://datasets/ppe/v3/"},
                    "model": {"base": "s3://models/ppe{c}/best.pt"}}),
    ("model.base", {"dataset": {"uri": "s3://datasets/ppe/v3/"},
                    "model": {"base": "registry://ppe{c}@j01"}}),
])
def test_control_characters_in_locations_are_422(
    live_url: str, auth: dict[str, str], char: str, field: str,
    spec: dict[str, Any],
) -> None:
    filled: dict[str, Any] = {"name": "ppe-detector"}
    for section, values in spec.items():
        filled[section] = {k: v.format(c=char) for k, v in values.items()}
    section, key = field.split(".")
    position = filled[section][key].index(char) + 1
    for response in _post_both(live_url, auth, filled):
        assert response.status_code == 422, response.text
        errors = {e["path"]: e["message"] for e in response.json()["errors"]}
        assert list(errors) == [f"spec.{field}"], errors
        message = errors[f"spec.{field}"]
        assert message.startswith(f"Value error, character {position} is U+{ord(char):04X} ")
        assert "are not allowed" in message
        assert f"spec.{field}: {message}" in response.json()["detail"]
