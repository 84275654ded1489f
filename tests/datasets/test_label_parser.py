"""Property tests: the label parser never crashes, and accepts a file exactly when every rule
holds for every non-blank line (checked against an independent statement of the rules)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from trainforge.datasets.labels import TOLERANCE, parse_label_bytes, parse_label_text

NC = 3

_no_space = st.text(
    alphabet=st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6
).filter(lambda t: not any(c.isspace() for c in t))
_class_token = st.one_of(
    st.integers(-2, NC + 2).map(str),
    st.sampled_from(["1.0", "+1", "٣", "0x1", "1e0", "--1", "-", "01", "a"]),
    _no_space,
)
_coord_token = st.one_of(
    st.floats(0, 1).map(repr),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(-0.01, 1.01).map(lambda v: f"{v:.7f}"),
    st.sampled_from(["nan", "inf", "-inf", "1e-7", "-1e-7", "1.0000001", "0", "1", "1_0",
                     "0.5", ".5", "5e-1", "abc", "0x1"]),
    _no_space,
)
_box_tokens = st.tuples(_class_token, _coord_token, _coord_token, _coord_token, _coord_token)
_line_tokens = st.one_of(
    _box_tokens.map(list),
    st.lists(_coord_token, min_size=0, max_size=8),  # wrong field counts, blank lines
)
_sep = st.sampled_from([" ", "  ", "\t", " \t "])


def _is_int(token: str) -> bool:
    body = token[1:] if token.startswith("-") else token
    return token.isascii() and body.isdigit()


def _line_ok(tokens: list[str]) -> bool:
    """The rules, written out independently of trainforge.datasets.labels."""
    if len(tokens) != 5:
        return False
    if not _is_int(tokens[0]) or not 0 <= int(tokens[0]) < NC:
        return False
    try:
        x, y, w, h = (float(t) for t in tokens[1:])
    except ValueError:
        return False
    if not all(math.isfinite(v) and -TOLERANCE <= v <= 1 + TOLERANCE for v in (x, y, w, h)):
        return False
    if w <= 0 or h <= 0:
        return False
    return (x - w / 2 >= -TOLERANCE and x + w / 2 <= 1 + TOLERANCE
            and y - h / 2 >= -TOLERANCE and y + h / 2 <= 1 + TOLERANCE)


@st.composite
def label_files(draw: st.DrawFn) -> tuple[str, list[list[str]]]:
    lines = draw(st.lists(_line_tokens, max_size=6))
    rendered = []
    for tokens in lines:
        sep = draw(_sep)
        lead = draw(st.sampled_from(["", " "]))
        tail = draw(st.sampled_from(["", " ", "\r"]))
        rendered.append(lead + sep.join(tokens) + tail)
    ending = draw(st.sampled_from(["", "\n"]))
    return "\n".join(rendered) + ending, lines


@settings(max_examples=300, deadline=None)
@given(label_files())
def test_accepts_exactly_when_every_rule_holds(sample: tuple[str, list[list[str]]]) -> None:
    text, lines = sample
    parsed = parse_label_text(text, NC, "x.txt")
    expected = all(_line_ok(tokens) for tokens in lines if tokens)
    assert parsed.ok == expected, (text, [p.format() for p in parsed.problems])
    bad_lines = {i for i, tokens in enumerate(lines, start=1) if tokens and not _line_ok(tokens)}
    error_lines = {p.line for p in parsed.problems if p.severity == "error"}
    assert error_lines == bad_lines
    if expected:
        distinct = {tuple(tokens) for tokens in lines if tokens}
        # Distinct token tuples may still parse to the same numbers ("0.5" vs ".5"): <=.
        assert len(parsed.boxes) <= len(distinct)
        assert len(parsed.boxes) + sum(p.code == "label_duplicate_box"
                                       for p in parsed.problems) == sum(1 for t in lines if t)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200), st.one_of(st.none(), st.integers(0, 5)))
def test_never_crashes_on_any_text(text: str, nc: int | None) -> None:
    parsed = parse_label_text(text, nc, "x.txt")
    n_lines = text.count("\n") + 1
    for p in parsed.problems:
        assert p.file == "x.txt" and p.line is not None and 1 <= p.line <= n_lines
        assert p.message


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200))
def test_never_crashes_on_any_bytes(data: bytes) -> None:
    parsed = parse_label_bytes(data, NC, "x.txt")
    assert all(p.code.startswith("label_") for p in parsed.problems)
