"""Hints for spec mistakes, in the vocabulary users bring from ``model.train()``.

A spec's unknown key is refused (``extra="forbid"``); the refusal should say what was meant. A
key is looked up, in this order, as: ``device`` (trainforge chooses the device from
``resources``); a name other tools use for a spec field (``lr`` → ``lr0``, ``data`` →
``dataset.uri``); a field that lives at another level (``mosaic`` under ``train`` →
``train.augment.mosaic``, ``epochs`` at the top → ``train.epochs``); a typo of a key of the same
section (``epoch`` → ``epochs``); a typo of a field anywhere. trainforge/spec.py formats every
validation error, so the API's problem+json ``errors`` and the CLI show the same hint.
"""

from __future__ import annotations

import difflib
import functools
import re
import typing
from collections import defaultdict

from pydantic import BaseModel

__all__ = ["DEVICE_HINT", "PLACEHOLDER", "nested_model", "unknown_key_hint"]

#: A placeholder of an example spec (``@DATASET_URI@``): a value to replace before submitting.
PLACEHOLDER = re.compile(r"^@[A-Z][A-Z0-9_]*@$")

#: What ``device`` (Ultralytics' ``model.train(device=…)``) becomes in a job spec.
DEVICE_HINT = (
    "trainforge picks the device from resources: resources.gpus_per_worker: 0 trains on the "
    "CPU (also on a GPU host), 1 gives each worker one GPU, and resources.workers: N trains "
    "data-parallel on N devices."
)

#: Names other tools (Ultralytics' CLI, other trainers) use for spec fields: a field name, or
#: the dotted path of a field.
_SYNONYMS = {
    "lr": "lr0",
    "learning_rate": "lr0",
    "batch_size": "batch",
    "img_size": "imgsz",
    "image_size": "imgsz",
    "imgsize": "imgsz",
    "data": "dataset.uri",
    "weights": "model.base",
    "pretrained": "model.base",
}


def nested_model(annotation: object) -> type[BaseModel] | None:
    """The spec section a field holds (``TrainParams`` for ``train``, also when optional);
    None for a value or a mapping of user-named keys (``sweep.space``)."""
    if typing.get_origin(annotation) is dict:
        return None
    candidates = [annotation, *typing.get_args(annotation)]
    nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return nested[0] if nested else None


@functools.cache
def _field_paths(root: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Every field name of the spec → the dotted paths it has (``workers`` has two)."""
    paths: dict[str, list[str]] = defaultdict(list)

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            paths[name].append(prefix + name)
            nested = nested_model(field.annotation)
            if nested is not None:
                walk(nested, f"{prefix}{name}.")

    walk(root, "")
    return {name: tuple(found) for name, found in paths.items()}


def unknown_key_hint(root: type[BaseModel], section: type[BaseModel], key: str) -> str | None:
    """What an unknown ``key`` in ``section`` (a part of the spec ``root``) probably meant.

    Args:
        root: the whole spec's model (JobSpec).
        section: the model the key was found in.
        key: the unknown key.

    Returns:
        A hint such as ``did you mean 'epochs'?`` or ``did you mean train.augment.mosaic?``,
        or None when nothing is close.
    """
    if key == "device":
        return DEVICE_HINT
    paths = _field_paths(root)
    siblings = list(section.model_fields)
    target = _SYNONYMS.get(key)
    if target is None and key in paths:
        target = key
    if target is None:
        close = difflib.get_close_matches(key, siblings, n=1, cutoff=0.75)
        close = close or difflib.get_close_matches(key, list(paths), n=1, cutoff=0.8)
        target = close[0] if close else None
    if target is None:
        return None
    if target in siblings:
        return f"did you mean {target!r}?"
    return f"did you mean {' or '.join(paths.get(target, (target,)))}?"
