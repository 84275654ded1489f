"""Characters that spoof logs and pages, refused in user text and shown escaped elsewhere.

Text a team sends (a dataset URI, a schedule's cron, a webhook's description, an alias move's
reason) reaches log lines, job events and the dashboard. Three kinds of characters make such
text lie about itself:

- control characters (U+0000-U+001F, U+007F, and the C1 range U+0080-U+009F, whose U+0085 is
  a line break to Python's ``str.splitlines`` and to several log viewers): a second, forged
  log line or event;
- the line and paragraph separators U+2028 and U+2029: line breaks to browsers' text
  rendering, JSON-lines readers and ``str.splitlines``;
- Unicode's bidirectional controls (the Bidi_Control property: U+061C, U+200E, U+200F,
  U+202A-U+202E, U+2066-U+2069), which reorder what a reader sees ("Trojan Source"):
  ``s3://datasets/vision/`` on a page may be ``s3://datasets/retail/`` byte for byte.

:func:`check_text` refuses them in user input, naming the first one and its position (the
one check every user string goes through: the job spec, trainforge/access.py's locations and
the API's bodies). Text trainforge only relays (a job's event reasons, which may quote a
dataset's file names; its log) is shown with them made visible instead: :func:`for_event`
before it is stored as an event, :func:`for_log` on the way into a log line, :func:`for_page`
into the dashboard.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator

#: Unicode's Bidi_Control characters (PropList.txt).
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F)))
                          + "".join(map(chr, range(0x2066, 0x206A))))
LINE_SEPARATORS = frozenset("\u2028\u2029")
CONTROL_CHARACTERS = frozenset(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
#: Everything :func:`check_text` refuses.
UNSAFE = BIDI_CONTROLS | LINE_SEPARATORS | CONTROL_CHARACTERS
#: Names of the control characters Unicode gives none (``unicodedata.name`` has no name for them).
_CONTROL_NAMES = {"\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\t": "CHARACTER TABULATION",
                  "\x00": "NULL", "\x1b": "ESCAPE", "\x7f": "DELETE", "\x85": "NEXT LINE"}


def describe(char: str) -> str:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)``: a character as a person can read it in a message."""
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(char, "a control character")
    return f"U+{ord(char):04X} ({name})"



def first_unsafe(text: str) -> tuple[int, str] | None:
    """The position (counting from 1) and the first character of ``text`` in :data:`UNSAFE`,
    or None."""
    if UNSAFE.isdisjoint(text):
        return None
    return next((i, c) for i, c in enumerate(text, start=1) if c in UNSAFE)


def check_text(text: str) -> str:
    """Refuse text with a control character, a line or paragraph separator or a bidirectional
    control (see the module docstring); returns ``text`` unchanged.

    Raises:
        ValueError: naming the first such character and its position, e.g. "character 14 is
            U+202E (RIGHT-TO-LEFT OVERRIDE): …" (callers prefix the field's name).
    """
    found = first_unsafe(text)
    if found is None:
        return text
    position, char = found
    kind = ("a bidirectional control" if char in BIDI_CONTROLS else
            "a line or paragraph separator" if char in LINE_SEPARATORS else
            "a control character")
    raise ValueError(f"character {position} is {describe(char)}, {kind}: control characters, "
                     "line and paragraph separators and bidirectional controls are not allowed")


#: A ``str`` field of an API body or the job spec that :func:`check_text` guards.
SafeText = Annotated[str, AfterValidator(check_text)]


def escaped(text: str, *, keep: frozenset[str] = frozenset()) -> str:
    """``text`` with every :data:`UNSAFE` character not in ``keep`` written as ``<U+XXXX>``."""
    if UNSAFE.isdisjoint(text):
        return text
    return "".join(f"<U+{ord(c):04X}>" if c in UNSAFE and c not in keep else c for c in text)


#: What relayed multi-line text keeps: its line breaks and tabs.
_LAYOUT = frozenset("\n\t")


def for_event(text: str) -> str:
    """Relayed text for a job's events and error message (what the API, the CLI and the
    dashboard show): line breaks and tabs kept, every other unsafe character made visible
    (terminal escapes, carriage returns, separators, bidirectional controls)."""
    return escaped(text, keep=_LAYOUT)


def for_log(text: str) -> str:
    """Relayed text for one log line: nothing in it can start another line or reorder it."""
    return escaped(text)


def for_page(text: str) -> str:
    """Relayed text for a page: bidirectional controls and separators made visible; control
    characters (a log's line breaks, a progress bar's carriage returns) are left to HTML, for
    which they are white space."""
    return escaped(text, keep=CONTROL_CHARACTERS)
