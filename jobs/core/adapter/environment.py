"""Ultralytics' environment: offline, private settings, a local font (no network)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from jobs.core.adapter.failures import raised_as
from trainforge.constants import ENV_YOLO_CONFIG_DIR, ENV_YOLO_OFFLINE
from trainforge.errors import WeightsError

log = logging.getLogger(__name__)

#: Ultralytics integrations that would otherwise activate from the user's settings file
#: (and, for raytune, report into a Ray session the job owns itself).
_INTEGRATIONS = ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
#: Ultralytics looks for this font in its config dir and otherwise fetches it from the internet.
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")



def prepare_environment(config_dir: Path) -> None:
    """Make Ultralytics offline and self-contained; call before importing it.

    Points ``YOLO_CONFIG_DIR`` at ``config_dir`` (so the user's settings file cannot switch on
    integrations) and puts a font there so plots never try the network. Cheap: imports
    nothing; the settings are adjusted when training or evaluation starts.

    Args:
        config_dir: a directory owned by this job (created if missing).
    """
    os.environ[ENV_YOLO_OFFLINE] = "1"
    os.environ[ENV_YOLO_CONFIG_DIR] = str(config_dir)
    font_dir = config_dir / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    source = _bundled_font()
    for name in _FONTS:
        target = font_dir / name
        if source is not None and not target.exists():
            # DejaVu Sans ships with matplotlib; any TrueType font serves Ultralytics' labels.
            shutil.copyfile(source, target)


def private_settings() -> None:
    """Turn integrations, usage events and shared run/weights dirs off in our own settings."""
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    config_dir = os.environ.get(ENV_YOLO_CONFIG_DIR)
    if not config_dir or Path(USER_CONFIG_DIR).resolve() != (Path(config_dir) / "Ultralytics"
                                                             ).resolve():
        log.warning("ultralytics settings in %s are not private to this job "
                    "(prepare_environment() ran after importing ultralytics); left untouched",
                    USER_CONFIG_DIR)
        return
    wanted = {**dict.fromkeys(_INTEGRATIONS, False), "sync": False,
              "runs_dir": str(Path(config_dir) / "runs"),
              "weights_dir": str(Path(config_dir) / "weights")}
    settings: Any = SETTINGS  # Ultralytics' settings manager is untyped
    if any(settings.get(k) != v for k, v in wanted.items()):
        settings.update(wanted)


def _bundled_font() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return path if path.is_file() else None




def download_stock(name: str) -> Path:
    """A stock Ultralytics asset (``yolov8n.pt``) by name, from Ultralytics' release assets
    (or its local copy); the caller checks the file like any other weights.

    Raises:
        WeightsError: Ultralytics could not fetch it (a network problem, an unknown name).
    """
    from ultralytics.utils.downloads import attempt_download_asset

    with raised_as(WeightsError, f"downloading {name} failed"):
        return Path(attempt_download_asset(name))
