"""values.yaml and values.schema.json: documented, strict, and refusing what must be refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.fixtures.chart import CHART, RELEASE, chart_values, helm

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
BAD_VALUES = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))
#: Schema nodes that pass Kubernetes objects or free-form maps through on purpose.
PASSTHROUGH = {"affinity", "global"}


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        return _resolve(SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]])
    if "allOf" in node and len(node["allOf"]) == 1 and "properties" not in node:
        return _resolve(node["allOf"][0])
    return node


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """(path, schema) of every node; a $ref wrapper's description is kept on the target."""
    wrapper_description = node.get("description")
    node = _resolve(node)
    if wrapper_description and not node.get("description"):
        node = {**node, "description": wrapper_description}
    out = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        out += _walk(child, f"{path}.{key}" if path else key)
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        out += _walk(extra, f"{path}.*")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    return out


def test_schema_is_a_valid_json_schema_and_accepts_the_defaults() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(chart_values())) == []


def test_schema_objects_refuse_unknown_keys_and_say_what_they_are() -> None:
    for path, node in _walk(SCHEMA):
        if path.rsplit(".", 1)[-1] in PASSTHROUGH or path.endswith("Env[]"):
            continue  # core/v1 objects passed through to Kubernetes, which validates them
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{path}: additionalProperties"
        if path and not path.endswith(("[]", ".*")):
            assert node.get("description"), f"{path}: description"


def test_every_default_value_is_in_the_schema_and_every_schema_key_has_a_default() -> None:
    def keys(values: Any, node: dict[str, Any], path: str) -> None:
        node = _resolve(node)
        if not isinstance(values, dict) or "properties" not in node:
            return
        unknown = set(values) - set(node["properties"])
        assert not unknown, f"{path}: {unknown} not in values.schema.json"
        for key in set(node["properties"]) - {"global"}:
            assert key in values, f"{path}.{key} has no default in values.yaml"
            keys(values[key], node["properties"][key], f"{path}.{key}")

    keys(chart_values(), SCHEMA, "")


def test_schema_enums_cover_the_choices() -> None:
    enums = {path: node["enum"] for path, node in _walk(SCHEMA) if "enum" in node}
    assert enums["dispatcher.backend"] == ["kuberay", "ray"]
    assert enums["image.pullPolicy"] == ["Always", "IfNotPresent", "Never"]


def test_every_value_is_documented_with_a_helm_docs_comment() -> None:
    """Each mapping key in values.yaml has a `# --` comment right above it (list items aside)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    list_indent: int | None = None
    for number, line in enumerate(lines):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if list_indent is not None and indent > list_indent:
            continue  # inside a list item: example data, documented by its key
        list_indent = None
        if stripped.startswith("- "):
            list_indent = indent - 1
            continue
        if not re.match(r"^[\w./-]+:", stripped):
            continue
        above = number - 1
        while above >= 0 and lines[above].strip().startswith("#") and "# --" not in lines[above]:
            above -= 1
        if above < 0 or "# --" not in lines[above]:
            undocumented.append(f"values.yaml:{number + 1}: {stripped}")
    assert undocumented == []


def _expectation(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: <message>'"
    return first.removeprefix("# expect: ")


@pytest.mark.parametrize("bad", BAD_VALUES, ids=[p.stem for p in BAD_VALUES])
def test_bad_values_are_refused_with_a_message_that_names_them(bad: Path) -> None:
    proc = helm("template", RELEASE, str(CHART), "-f", str(bad), check=False)
    assert proc.returncode != 0, f"{bad.name} was accepted"
    assert _expectation(bad) in proc.stderr, proc.stderr


def test_there_are_bad_values_cases_for_each_guard() -> None:
    names = {p.stem for p in BAD_VALUES}
    assert {"database-url-as-value", "typo-top-level", "ray-backend-without-cluster",
            "default-pool-missing", "worker-group-min-over-max"} <= names
