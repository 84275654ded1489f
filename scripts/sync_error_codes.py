"""Rewrite the table of error codes in docs/training.md from trainforge/errors.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from trainforge.errors import code_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"
BLOCK = re.compile(r"(<!-- error-codes:start -->\n).*?(<!-- error-codes:end -->)", re.S)


def main() -> int:
    text = DOC.read_text()
    if not BLOCK.search(text):
        print(f"{DOC}: no error-codes block", file=sys.stderr)
        return 1
    DOC.write_text(BLOCK.sub(lambda m: m.group(1) + code_table() + m.group(2), text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
