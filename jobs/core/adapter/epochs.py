"""What Ultralytics reports after each epoch, as the adapter hands it on.

Its own module, below both training.py (which reports it) and safety.py (which pickles one as a
harmless probe of the weights-only loader), so that neither imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch (1-based) and its metrics under Ultralytics' names."""

    epoch: int
    epochs: int
    metrics: dict[str, float]
