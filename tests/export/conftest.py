"""Fixtures for the export job: a detector that really detects, a Pushgateway, an event sink."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from trainforge.datasets import synth

PUSHGATEWAY = "/usr/bin/prometheus-pushgateway"

#: Small enough to train in about a minute on two CPU cores, big enough to find the shapes.
DATASET = {"classes": 1, "train": 192, "val": 16, "test": 16, "imgsz": 64, "seed": 1}
TRAIN = {"epochs": 12, "batch": 16, "imgsz": 64, "mosaic": 0.0, "warmup_epochs": 0.3,
         "optimizer": "AdamW", "lr0": 0.01, "seed": 0, "deterministic": True}


@dataclass(frozen=True)
class Trained:
    """A trained checkpoint and the dataset it was trained on."""

    weights: Path
    dataset: Path
    data_yaml: Path


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth(tmp_path_factory.mktemp("shapes") / "ds", **DATASET)


@pytest.fixture(scope="session")
def trained(shapes_dataset: Path, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Trained:
    """yolov8n trained from scratch on the shapes set (about a minute on two CPU cores).

    The checkpoint is kept in pytest's cache, keyed by the recipe and the library versions, so
    a rerun on the same machine reuses it; training is deterministic, so this changes nothing
    but the wait.
    """
    import torch
    import ultralytics

    from trainforge.datasets import write_local_data_yaml

    work = tmp_path_factory.mktemp("trained")
    data_yaml = write_local_data_yaml(shapes_dataset, work / "data.yaml")
    recipe = json.dumps([DATASET, TRAIN, ultralytics.__version__, torch.__version__])
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    cache = getattr(request.config, "cache", None)
    cached = cache.mkdir(f"trainforge-export-model-{key}") / "best.pt" if cache else None
    weights = work / "best.pt"
    if cached is not None and cached.is_file():
        shutil.copyfile(cached, weights)
        return Trained(weights, shapes_dataset, data_yaml)
    from ultralytics.models.yolo.model import YOLO

    YOLO("yolov8n.yaml").train(
        data=str(data_yaml), device="cpu", workers=0, plots=False, val=False, amp=False,
        cache="ram", project=str(work / "runs"), name="train", exist_ok=True, verbose=False,
        **TRAIN,
    )
    shutil.copyfile(work / "runs" / "train" / "weights" / "last.pt", weights)
    if cached is not None:
        shutil.copyfile(weights, cached)
    return Trained(weights, shapes_dataset, data_yaml)


@pytest.fixture()
def pushgateway(tmp_path: Path) -> Iterator[str]:
    """A real Pushgateway process on a free loopback port; yields its URL.

    It keeps metrics in memory only (Debian's build persists to a shared file under
    /var/lib/prometheus by default) and serves under a random route prefix, so a test never
    sees another run's metrics or talks to another process that grabbed the same port.
    """
    if not Path(PUSHGATEWAY).is_file():
        pytest.skip(f"{PUSHGATEWAY} is not installed (Debian package prometheus-pushgateway)")
    port = free_port()
    prefix = f"/pg-{uuid.uuid4().hex[:12]}"
    log_path = tmp_path / "pushgateway.log"
    log = log_path.open("wb")
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}",
                             f"--web.route-prefix={prefix}", "--persistence.file="],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}{prefix}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pushgateway exited: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pushgateway did not start: {log_path.read_text()}") \
                        from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the Pushgateway exposes: (name, sorted labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float | None:
    """The value of one sample whose labels include ``labels`` (None when absent)."""
    for (found, found_labels), value in samples.items():
        if found == name and set(labels.items()) <= set(found_labels):
            return value
    return None


class EventSink(ThreadingHTTPServer):
    """A real HTTP server that records what jobs POST to /internal/v1/jobs/{id}/events."""

    events: list[dict[str, Any]]
    headers_seen: list[str]


class _Handler(BaseHTTPRequestHandler):
    server: EventSink

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.events.append({"path": self.path, **json.loads(body)})
        self.server.headers_seen.append(self.headers.get("Authorization", ""))
        self.send_response(202)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def event_sink() -> Iterator[EventSink]:
    server = EventSink(("127.0.0.1", 0), _Handler)
    server.events, server.headers_seen = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
