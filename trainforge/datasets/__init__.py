"""The dataset toolkit: synthesise, validate, split, fingerprint and cache YOLO datasets."""

from trainforge.datasets.synth import synth

__all__ = ["synth"]
