"""``trainforge dataset …``: validate, split, stats, preview, synth, fingerprint, sync."""

from __future__ import annotations

import typer

app = typer.Typer(help="Check, split, inspect and cache YOLO datasets.", no_args_is_help=True)
