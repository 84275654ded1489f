"""``--smoke``, which every benchmark has: the same code path end to end at tiny sizes.

tests/bench/test_bench_smoke.py runs each ``bench/*.py`` with ``--smoke`` and checks that it
exits 0 and prints the lines its ``SMOKE_RATIO_LINES`` patterns match, so a benchmark that
stops working fails the suite instead of rotting until someone needs its figures. A smoke run's
figures mean nothing; only the full sizes (the defaults) are recorded in docs/benchmarks.md.

A benchmark whose jobs train adds :func:`add_plots_option`: a smoke run draws no plots (on its
tiny jobs drawing them takes as long as the training), full-size runs draw them as a user's
job does.

A script may also set ``SMOKE_MARKS``, the pytest markers of its smoke test (default
``("slow",)``: most benchmarks train, or start Ray or a server).
"""

from __future__ import annotations

import argparse
from typing import Any


def add_plots_option(parser: argparse.ArgumentParser) -> None:
    """``--plots/--no-plots``: the jobs' ``train.plots`` (default on; ``--smoke`` turns it
    off unless given)."""
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True,
                        help="the jobs draw and publish Ultralytics' plots (train.plots)")


def parse_args(parser: argparse.ArgumentParser, **sizes: Any) -> argparse.Namespace:
    """Add ``--smoke`` to ``parser`` and parse the command line.

    Args:
        parser: the benchmark's parser, every other option already added.
        sizes: option destinations and the tiny values ``--smoke`` gives them; an option
            given on the command line keeps its value.

    Returns:
        The parsed arguments (``smoke`` among them).
    """
    shown = ", ".join(f"--{name.replace('_', '-')} {value}" for name, value in sizes.items())
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny sizes ({shown}): checks that the benchmark runs end to end "
                        "(tests/bench/test_bench_smoke.py); its figures mean nothing")
    known, _ = parser.parse_known_args()
    if known.smoke:
        parser.set_defaults(**sizes)
    return parser.parse_args()
