"""Load untrusted YAML (data.yaml, job specs) with bounded size, depth and alias expansion.

``yaml.safe_load`` refuses tags and objects, but not a document that is small on the wire and
huge in memory: a ~1 KB "billion laughs" (nested ``&anchor``/``*alias`` references) loads
fine as shared Python objects, then expands to billions of values the moment anything walks it
(``repr``, ``json.dumps``, pydantic). :func:`safe_load` has ``yaml.SafeLoader`` semantics
but checks the *node graph* before any Python value is built:

- the document's size in bytes (``max_bytes``);
- its depth, counting what aliases add (``max_depth``);
- its node count with every alias counted as the size of what it points to, memoised so the
  check itself is linear in the document (``max_nodes``);
- recursive aliases (a node that contains itself) are refused.

The pure-Python loader is used on purpose: libyaml's composer recurses in C without a depth
check, while the Python one is bounded here before it can recurse far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode
from yaml.scanner import ScannerError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "YamlLimitError",
    "safe_load",
]

#: Largest document accepted, in bytes (a data.yaml or a job spec is a few hundred bytes).
MAX_BYTES = 1024 * 1024
#: Deepest nesting accepted, aliases expanded (a job spec nests 4 levels).
MAX_DEPTH = 64
#: Most nodes (scalars, sequences, mappings, mapping keys included) accepted, aliases expanded.
MAX_NODES = 100_000
#: What PyYAML's scanner says about a tab, for which ours says what to do.
_TAB_PROBLEM = "found character '\\t' that cannot start any token"


class YamlLimitError(yaml.YAMLError):
    """A document refused for its size, depth, alias expansion or a recursive alias.

    A :class:`yaml.YAMLError`, so callers that already handle unparsable YAML refuse it too.

    Attributes:
        problem: what is wrong and what to change (also ``str(exc)``).
        problem_mark: where the document first exceeded the limit, when known.
        limit: which limit: ``bytes``, ``depth``, ``nodes``, ``aliases`` or ``recursion``.
    """

    def __init__(self, problem: str, *, limit: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.problem_mark = mark
        self.limit = limit

    def __str__(self) -> str:
        return self.problem


@dataclass(frozen=True)
class _Limits:
    what: str
    max_depth: int
    max_nodes: int

    def too_deep(self, mark: yaml.Mark | None) -> YamlLimitError:
        return YamlLimitError(
            f"{self.what} nests deeper than {self.max_depth} levels"
            + (" once its aliases (&anchor/*alias) are expanded" if mark is None else "")
            + ": flatten it",
            limit="depth", mark=mark,
        )

    def too_many(self, aliased: bool, mark: yaml.Mark | None) -> YamlLimitError:
        if aliased:
            return YamlLimitError(
                f"{self.what} expands to more than {self.max_nodes} nodes through aliases "
                "(&anchor/*alias); write the values out",
                limit="aliases", mark=mark,
            )
        return YamlLimitError(
            f"{self.what} has more than {self.max_nodes} values: keep it small",
            limit="nodes", mark=mark,
        )


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer stops at the depth limit and at the node budget.

    The composer is where the document would otherwise recurse (one Python frame per level)
    and allocate (one node per value), so both limits are enforced there, before a node or a
    Python value exists beyond them.
    """

    def __init__(self, stream: str | bytes, limits: _Limits) -> None:
        super().__init__(stream)
        self._limits = limits
        self._depth = 0
        # Every node composed, plus every alias reference: an alias stands for at least one
        # node, so more references than the budget means the expansion is over it too.
        self._references = 0
        self.aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            self.aliases += 1
        self._references += 1
        if self._references > self._limits.max_nodes:
            raise self._limits.too_many(self.aliases > 0, event.start_mark)
        self._depth += 1
        try:
            if self._depth > self._limits.max_depth:
                raise self._limits.too_deep(event.start_mark)
            node: Node | None = super().compose_node(parent, index)
            assert node is not None  # None only at the end of a stream, never for a node
            return node
        finally:
            self._depth -= 1


def _check_expansion(root: Node, limits: _Limits, aliased: bool) -> None:
    """Refuse a node graph whose alias expansion is too large, too deep, or recursive.

    ``(size, height)`` of each node is memoised by identity (an alias is the *same* node
    object as its anchor), so a billion laughs costs one visit per distinct node. The walk
    carries the depth it is at and stops past ``max_depth``, so it never recurses further.
    """
    memo: dict[int, tuple[int, int]] = {}
    on_path: set[int] = set()

    def visit(node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in on_path:
            raise YamlLimitError(
                f"{limits.what} has a recursive alias (an &anchor used inside itself, at line "
                f"{node.start_mark.line + 1}): write the values out",
                limit="recursion", mark=node.start_mark,
            )
        known = memo.get(key)
        if known is not None:
            size, height = known
            if depth + height - 1 > limits.max_depth:
                raise limits.too_deep(None)
            return known
        if depth > limits.max_depth:
            raise limits.too_deep(None)
        size, height = 1, 1
        if isinstance(node, SequenceNode | MappingNode):
            children: list[Node] = (
                list(node.value) if isinstance(node, SequenceNode)
                else [part for pair in node.value for part in pair]
            )
            on_path.add(key)
            for child in children:
                child_size, child_height = visit(child, depth + 1)
                size += child_size
                height = max(height, child_height + 1)
                if size > limits.max_nodes:
                    raise limits.too_many(aliased, None)
            on_path.discard(key)
        memo[key] = (size, height)
        return size, height

    visit(root, 1)


def _compose(loader: _BoundedLoader) -> Node | None:
    """The document's node graph; a tab where YAML wants indentation is refused in words that
    say what to do (PyYAML: "found character '\\t' that cannot start any token").

    Raises:
        yaml.YAMLError: not valid YAML.
    """
    try:
        return loader.get_single_node()
    except ScannerError as exc:
        if exc.problem != _TAB_PROBLEM:
            raise
        raise ScannerError(None, None, "YAML forbids tabs: indent with spaces",
                           exc.problem_mark) from None


def safe_load(
    data: str | bytes,
    *,
    what: str = "the YAML document",
    max_bytes: int = MAX_BYTES,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Any:
    """Parse one untrusted YAML document, as ``yaml.safe_load`` would, within limits.

    Args:
        data: the document (bytes are decoded as YAML does: UTF-8, or UTF-16 with a BOM).
        what: how messages name the document, e.g. ``"data.yaml"``.
        max_bytes: largest size accepted (a ``str`` counts its UTF-8 bytes).
        max_depth: deepest nesting accepted, aliases expanded.
        max_nodes: most nodes accepted, every alias counted as the size of its target.

    Returns:
        The Python value (None for an empty document).

    Raises:
        YamlLimitError: over a limit, or a recursive alias; nothing was constructed.
        yaml.YAMLError: not valid YAML (including a value YAML's safe types cannot hold,
            such as month 13 of a date), or more than one document.
    """
    size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise YamlLimitError(
            f"{what} is {size} bytes, over the limit of {max_bytes}: keep it small",
            limit="bytes",
        )
    limits = _Limits(what, max_depth, max_nodes)
    loader = _BoundedLoader(data, limits)
    try:
        try:
            node = _compose(loader)
            if node is None:
                return None
            _check_expansion(node, limits, loader.aliases > 0)
        except RecursionError:
            # Only reachable with a max_depth near the interpreter's recursion limit.
            raise limits.too_deep(None) from None
        try:
            return loader.construct_document(node)
        except (ValueError, OverflowError) as exc:
            # int("1" * 5000) (Python's digit limit) or date 2001-13-01: bad input, not a bug.
            raise ConstructorError(None, None, f"a value cannot be read: {exc}", None) from None
    finally:
        loader.dispose()
