"""trainforge.safeyaml: untrusted YAML is refused for size, depth, alias expansion and recursive
aliases before any Python value is built; ordinary documents load exactly as yaml.safe_load.

Also the two places that load untrusted YAML through it: data.yaml (parse_config, the dataset
validation behind POST /v1/datasets/validate and every job) and job specs (load_spec).
"""

from __future__ import annotations

import importlib.util
import json
import resource
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.security.support import billion_laughs
from trainforge import safeyaml
from trainforge.datasets.config import parse_config
from trainforge.errors import SpecError
from trainforge.safeyaml import MAX_DEPTH, MAX_NODES, YamlLimitError, safe_load
from trainforge.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_billion_laughs_is_refused_at_once_and_without_memory() -> None:
    bomb = billion_laughs()
    assert len(bomb) < 1024  # ~1 KB on the wire, 9**10 strings once expanded
    before = _peak_rss_mb()
    started = time.perf_counter()
    with pytest.raises(YamlLimitError) as refused:
        safe_load(bomb, what="data.yaml")
    elapsed = time.perf_counter() - started
    assert str(refused.value) == (
        f"data.yaml expands to more than {MAX_NODES} nodes through aliases (&anchor/*alias); "
        "write the values out"
    )
    assert refused.value.limit == "aliases"
    # The refusal walks ~100 distinct nodes, never the expansion: bounds with a wide margin.
    assert elapsed < 5, f"refusing the bomb took {elapsed:.1f} s"
    assert _peak_rss_mb() - before < 200


def test_the_alias_budget_counts_expanded_nodes_exactly() -> None:
    # "x: [*a, *a, …]": 2 (the key x and its sequence) + n aliases × 3 nodes ([1, 2]) each,
    # plus the anchor's own key and value: 1 + 3. Every mapping key counts as a node.
    def doc(n: int) -> str:
        return "a: &a [1, 2]\nx: [" + ", ".join(["*a"] * n) + "]\n"

    def expanded(n: int) -> int:
        return 1 + (1 + 3) + (1 + 1 + 3 * n)

    n = 30
    assert safe_load(doc(n), max_nodes=expanded(n)) == yaml.safe_load(doc(n))
    with pytest.raises(YamlLimitError, match="through aliases"):
        safe_load(doc(n), max_nodes=expanded(n) - 1)


def test_without_aliases_the_message_is_about_size_not_aliases() -> None:
    flat = "[" + ", ".join(["1"] * 50) + "]"
    assert safe_load(flat, max_nodes=51) == list(range(1, 2)) * 50
    with pytest.raises(YamlLimitError, match="has more than 50 values") as refused:
        safe_load(flat, max_nodes=50)
    assert refused.value.limit == "nodes" and "alias" not in str(refused.value)


def test_many_alias_references_are_refused_while_composing() -> None:
    # 250k references to one scalar: over the budget long before the graph is complete.
    doc = "a: &a x\nb: [" + "*a, " * 250_000 + "*a]\n"
    assert len(doc) <= safeyaml.MAX_BYTES
    started = time.perf_counter()
    with pytest.raises(YamlLimitError, match="through aliases"):
        safe_load(doc)
    assert time.perf_counter() - started < 10


@pytest.mark.parametrize("doc", [
    "&a [*a]",
    "a: &a {b: *a}",
    "a: &a [1, {b: [2, *a]}]",
    "&a {x: &b [*a, *b]}",
])
def test_recursive_aliases_are_refused(doc: str) -> None:
    assert isinstance(yaml.safe_load(doc), list | dict)  # yaml.safe_load builds a cycle
    with pytest.raises(YamlLimitError, match="recursive alias") as refused:
        safe_load(doc)
    assert refused.value.limit == "recursion"


def test_depth_is_limited_as_written() -> None:
    ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert safe_load(ok) == yaml.safe_load(ok)
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    with pytest.raises(YamlLimitError, match=f"deeper than {MAX_DEPTH} levels") as refused:
        safe_load(deep)
    assert refused.value.limit == "depth"
    assert refused.value.problem_mark is not None and refused.value.problem_mark.line == 0


def test_depth_counts_what_aliases_add() -> None:
    # Each level is shallow as written, but *a5 stands for 6 nested lists.
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 6)]
    doc = "\n".join(lines) + "\nx: [*a5]\n"
    # The mapping, x's list, the 6 lists *a5 stands for, the scalar 1: 9 levels.
    assert safe_load(doc, max_depth=9) == yaml.safe_load(doc)
    with pytest.raises(YamlLimitError, match="once its aliases .* are expanded"):
        safe_load(doc, max_depth=8)


def test_very_deep_nesting_is_a_limit_error_not_a_recursion_error() -> None:
    # 200k levels in 400 KB: yaml.safe_load itself dies with RecursionError on this.
    doc = "[" * 200_000 + "]" * 200_000
    with pytest.raises(RecursionError):
        yaml.safe_load(doc)
    with pytest.raises(YamlLimitError, match="deeper than"):
        safe_load(doc)
    # Even with the depth limit lifted past what Python can recurse, it stays a YAMLError.
    with pytest.raises(YamlLimitError, match="deeper than"):
        safe_load(doc, max_depth=10**9, max_nodes=10**9)


def test_size_is_limited_in_bytes() -> None:
    assert safe_load("a: " + "x" * 1000, max_bytes=1003) == {"a": "x" * 1000}
    with pytest.raises(YamlLimitError, match="1004 bytes, over the limit of 1003"):
        safe_load("a: " + "x" * 1001, max_bytes=1003)
    # A str counts its UTF-8 bytes: 500 "é" are 1000 bytes.
    with pytest.raises(YamlLimitError, match="over the limit"):
        safe_load("a: " + "é" * 500, max_bytes=1002)
    with pytest.raises(YamlLimitError, match="over the limit"):
        safe_load(b"a: " + b"x" * safeyaml.MAX_BYTES)


@pytest.mark.parametrize(("doc", "message"), [
    ("a: " + "1" * 5000, "a value cannot be read"),  # Python's int digit limit
    ("a: 2001-13-01", "month must be in 1..12"),
    ("a: 1\n---\nb: 2\n", "expected a single document"),
    ("a: !!python/object/apply:os.system [true]", "could not determine a constructor"),
])
def test_values_yaml_cannot_hold_are_yaml_errors(doc: str, message: str) -> None:
    with pytest.raises(yaml.YAMLError, match=message):
        safe_load(doc)


def _corpus() -> list[Path]:
    files = sorted((REPO / "examples").glob("*.yaml"))
    files += sorted((REPO / "infra" / "prometheus").glob("*.yaml"))
    files += sorted((REPO / "charts" / "trainforge" / "ci").glob("*.yaml"))
    files += [REPO / "charts" / "trainforge" / "values.yaml"]
    spec = importlib.util.find_spec("ultralytics")
    if spec is not None and spec.origin:
        # Real-world data.yaml files (COCO, VOC, Objects365, …) and Ultralytics' default.yaml.
        files += sorted((Path(spec.origin).parent / "cfg").rglob("*.yaml"))
    return files


def test_ordinary_documents_load_exactly_as_yaml_safe_load() -> None:
    files = _corpus()
    assert len(files) >= 10, files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert safe_load(text) == yaml.safe_load(text), path
        assert safe_load(text.encode()) == yaml.safe_load(text.encode()), path


@pytest.mark.parametrize("doc", [
    "path: .\ntrain: images/train\nval: images/val\nnames: {0: helmet, 1: vest}\n",
    "train: a\nval: b\nnc: 2\nnames: ['no', 'yes']\n",
    "base: &base {lr0: 0.01, epochs: 3}\ntrain: {<<: *base, epochs: 5}\n",
    "names:\n  - &p person\n  - *p\nwhen: 2024-05-01\nflag: on\nn: 0x1f\nf: .5\nnil: ~\n",
    '{"name": "x", "dataset": {"uri": "s3://datasets/a/"}}',
    "",
])
def test_small_documents_load_exactly_as_yaml_safe_load(doc: str) -> None:
    assert safe_load(doc) == yaml.safe_load(doc)


def _accept_every_dir(_rel: str) -> Any:
    return "dir"


def test_parse_config_reports_the_bomb_as_data_yaml_invalid() -> None:
    bomb = billion_laughs().encode()
    started = time.perf_counter()
    parsed = parse_config(bomb, "data.yaml", _accept_every_dir)
    assert time.perf_counter() - started < 5
    assert [(p.code, p.file) for p in parsed.problems] == [("data_yaml_invalid", "data.yaml")]
    assert "expands to more than" in parsed.problems[0].message
    assert "(&anchor/*alias); write the values out" in parsed.problems[0].message
    assert not parsed.ok and parsed.names == []


def test_parse_config_reports_depth_and_recursion_with_a_line() -> None:
    deep = b"train: a\nval: b\nnames: " + b"[" * 100 + b"x" + b"]" * 100 + b"\n"
    parsed = parse_config(deep, "data.yaml", _accept_every_dir)
    assert [(p.code, p.line) for p in parsed.problems] == [("data_yaml_invalid", 3)]
    assert "deeper than 64 levels" in parsed.problems[0].message
    recursive = b"train: a\nval: b\nnames: &n [a, *n]\n"
    parsed = parse_config(recursive, "data.yaml", _accept_every_dir)
    assert "recursive alias" in parsed.problems[0].message


def test_parse_config_messages_show_values_briefly() -> None:
    # Within the budget, but a name that is a 20k-entry list: the message must stay short.
    big = json.dumps([list(range(1000))] * 20)
    doc = f"train: a\nval: b\nnames: [{big}]\npath: {big}\n".encode()
    parsed = parse_config(doc, "data.yaml", _accept_every_dir)
    codes = {p.code for p in parsed.problems}
    assert {"data_yaml_names_invalid", "data_yaml_path_invalid"} <= codes, parsed.problems
    assert max(len(p.message) for p in parsed.problems) < 1000


def test_parse_config_with_ids_that_collide_is_a_problem_not_a_crash() -> None:
    # 1 and "1" are the same class id; sorting (id, value) pairs compared a str with a list.
    doc = b'train: a\nval: b\nnames: {1: a, "1": [x]}\n'
    parsed = parse_config(doc, "data.yaml", _accept_every_dir)
    assert [p.code for p in parsed.problems] == ["data_yaml_names_invalid"]


def test_load_spec_refuses_a_bomb_and_loads_the_example() -> None:
    with pytest.raises(SpecError, match="ppe.yaml: the job spec expands to more than"):
        load_spec(billion_laughs(key="name"), source="ppe.yaml")
    with pytest.raises(SpecError, match="recursive alias"):
        load_spec("name: x\ndataset: &d {uri: *d}\n")
    example = (REPO / "examples" / "shapes-demo.yaml").read_text().replace(
        "@DATASET_URI@", "s3://datasets/shapes/")  # what `make demo` fills in
    spec = load_spec(example)
    assert spec.model_dump(mode="json")["name"] == yaml.safe_load(example)["name"]


def test_parse_config_stays_linear_and_brief_with_thousands_of_keys() -> None:
    # 30k unknown keys (within the node budget): one problem each, with a line found by a
    # scan of the text per key, was a report of megabytes built in about a minute.
    keys = 30_000
    doc = ("train: a\nval: b\nnames: [x]\n" + "".join(f"k{i}: 1\n" for i in range(keys))).encode()
    started = time.perf_counter()
    parsed = parse_config(doc, "data.yaml", _accept_every_dir)
    elapsed = time.perf_counter() - started
    unknown = [p for p in parsed.problems if p.code == "data_yaml_unknown_key"]
    assert len(unknown) == 21
    assert [(p.message.split("'")[1], p.line) for p in unknown[:3]] == [
        ("k0", 4), ("k1", 5), ("k2", 6)]
    assert unknown[-1].message.startswith(f"{keys - 20} more keys are not used")
    assert elapsed < 20, f"{elapsed:.1f} s"  # ~2 s here; the quadratic scan took ~60 s


def test_parse_config_sums_up_repeated_names() -> None:
    doc = b"train: a\nval: b\nnames: [" + b", ".join([b"a"] * 5000) + b"]\n"
    parsed = parse_config(doc, "data.yaml", _accept_every_dir)
    repeated = [p for p in parsed.problems if p.code == "data_yaml_names_duplicate"]
    assert len(repeated) == 21 and all(p.line == 3 for p in repeated)
    assert repeated[-1].message.startswith("4979 more classes repeat a name")
