"""Killing the publisher at random points never exposes a manifest whose files are wrong.

For each store (local directory, S3 server on loopback): 50 publishes of distinct versions,
each SIGKILLed after a random delay spread over a full publish; after each, a rerun publishes
the version again with different bytes (a re-export is not byte-identical). A reader thread
checks every visible manifest against its files the whole time.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainforge.registry import find_manifest, manifest_uri, publish, verify
from trainforge.storage import open_location

pytestmark = pytest.mark.slow  # real publishing processes, killed

RUNS = 50
REPO = Path(__file__).resolve().parents[2]


class Publisher:
    """Talks to tests/export/publish_worker.py."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("publish_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
        )
        assert json.loads(self._line()) == {"ready": True}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "publish_worker.py died"
        return line

    def publish(self, models_uri: str, version: str, files: dict[str, Path],
                kill_after: float | None) -> dict[str, object]:
        assert self.proc.stdin is not None
        request = {"models_uri": models_uri, "name": "kill", "version": version,
                   "files": {k: str(v) for k, v in files.items()}, "kill_after": kill_after}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        result: dict[str, object] = json.loads(self._line())
        return result

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture()
def publisher() -> Iterator[Publisher]:
    worker = Publisher()
    yield worker
    worker.close()


class Reader(threading.Thread):
    """Polls the manifest of the version being published and verifies it whenever it exists."""

    def __init__(self, models_uri: str) -> None:
        super().__init__(daemon=True)
        self.models_uri = models_uri
        self.version: str | None = None
        self.stop = threading.Event()
        self.checked = 0
        self.verified: set[str] = set()  # versions seen with a manifest and verified
        self.problems: list[str] = []

    def wait_verified(self, version: str, timeout: float = 30.0) -> bool:
        """True once ``version``'s manifest has been verified by this thread (polls)."""
        deadline = time.monotonic() + timeout
        while version not in self.verified and time.monotonic() < deadline:
            time.sleep(0.01)
        return version in self.verified

    def run(self) -> None:
        try:
            while not self.stop.wait(0.05):
                version = self.version
                if version is None or find_manifest(self.models_uri, "kill", version) is None:
                    continue
                found = verify(manifest_uri(self.models_uri, "kill", version))
                self.checked += 1
                self.verified.add(version)
                self.problems += [f"{version}: {p.artifact}: {p.message}" for p in found]
        except Exception as exc:  # a reader that dies must fail the test, not go quiet
            self.problems.append(f"reader crashed: {type(exc).__name__}: {exc}")


def _files(folder: Path, seed: int) -> dict[str, Path]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"best.pt": 256 * 1024, "model.onnx": 128 * 1024, "last.pt": 64 * 1024}
    files = {}
    for name, size in sizes.items():
        (folder / name).write_bytes(rng.randbytes(size))
        files[name] = folder / name
    (folder / "report.json").write_text(json.dumps({"seed": seed}))
    files["report.json"] = folder / "report.json"
    return files


@pytest.mark.parametrize("store", ["local", "s3"])
def test_kill_at_random_points_never_exposes_a_bad_manifest(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if store == "s3":
        models_uri = f"s3://{request.getfixturevalue('s3_bucket')}/models"
    else:
        models_uri = f"file://{tmp_path}/models"
    worker = request.getfixturevalue("publisher")
    reader = Reader(models_uri)
    reader.start()
    # Full publishes (with the reader running) set the range of kill delays: 0 to past the end.
    durations = []
    for i in range(3):
        reader.version = f"calibration{i}"
        began = time.perf_counter()
        assert worker.publish(models_uri, f"calibration{i}", _files(tmp_path / "c", i), None) \
            == {"killed": False, "exit": 0}
        durations.append(time.perf_counter() - began)
    span = sorted(durations)[1] * 1.5
    rng = random.Random(1234)
    killed_before_manifest = killed_after_manifest = partial_uploads = 0
    try:
        for run in range(RUNS):
            version = reader.version = f"v{run:03d}"
            first = _files(tmp_path / version / "a", 2 * run + 1)
            result = worker.publish(models_uri, version, first, rng.uniform(0, span))
            assert result["exit"] in (0, -1), result
            before = find_manifest(models_uri, "kill", version)
            if result["killed"]:
                if before is None:
                    killed_before_manifest += 1
                    store_, key = open_location(manifest_uri(models_uri, "kill", version))
                    partial_uploads += any(True for _ in store_.list(key.rsplit("/", 1)[0] + "/"))
                else:
                    killed_after_manifest += 1
            # The rerun: different bytes, same version.
            again = publish(models_uri, "kill", version, _files(tmp_path / version / "b",
                                                                2 * run + 2), {})
            assert again.created is (before is None)
            if before is not None:
                assert again.manifest == before  # never overwritten
            assert verify(again.manifest_uri) == []
            # The reader looks at every version at least once, however loaded the machine is;
            # whether it also looks mid-publish is up to the scheduler.
            assert reader.wait_verified(version), f"the reader never verified {version}"
    finally:
        reader.stop.set()
        reader.join(timeout=60)
    assert reader.problems == []
    assert len(reader.verified) >= RUNS  # the reader really looked, at every version
    store_, key = open_location(models_uri.rstrip("/") + "/kill/")
    manifests = [i.key for i in store_.list(key) if i.key.endswith("/manifest.json")]
    assert len(manifests) == RUNS + 3
    assert all(verify(store_.uri(k)) == [] for k in manifests)
    # The kills landed everywhere: mid-upload, and after the manifest was written.
    assert killed_before_manifest > 0 and partial_uploads > 0, (killed_before_manifest,
                                                                partial_uploads)
    assert killed_after_manifest + (RUNS - killed_before_manifest - killed_after_manifest) > 0
    print(f"{store}: {RUNS} runs, killed before manifest {killed_before_manifest} "
          f"(with partial uploads {partial_uploads}), after {killed_after_manifest}, "
          f"reader checks {reader.checked}, publish span {span:.3f}s")
