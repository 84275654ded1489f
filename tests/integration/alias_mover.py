"""Moves one alias back and forth between published versions until killed.

Used by test_aliases.py, which SIGKILLs this process at random moments: each move is
``trainforge.aliases.move`` exactly as a job's promote step and ``trainforge models promote``
call it. Prints ``ready`` once imported, then one line per finished move.
"""

from __future__ import annotations

import sys


def main() -> None:
    from trainforge import aliases

    models_uri, name, *versions = sys.argv[1:]
    print("ready", flush=True)
    n = 0
    while True:
        version = versions[n % len(versions)]
        try:
            aliases.move(models_uri, name, "champion", version, actor="mover",
                         reason=f"move {n}")
        except aliases.AliasConflict:
            pass  # a record of the same number exists: the next loop reads the new head
        print(f"moved {version}", flush=True)
        n += 1


if __name__ == "__main__":
    main()
