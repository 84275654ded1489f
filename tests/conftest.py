"""Fixtures named after the real services they start or connect to."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")


def free_port() -> int:
    """A free TCP port on loopback (for servers a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """An ASGI app served by uvicorn in a thread on a free loopback port; yields its URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def embedded_env(home: Path) -> dict[str, str]:
    """The environment of a `trainforge serve` that trains real jobs: this checkout on the path,
    offline Ultralytics, its own home, a fast dispatcher loop, and nothing of the caller's
    trainforge or Ray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINFORGE_", "RAY_"))}
    env.update({"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "YOLO_OFFLINE": "1",
                "TRAINFORGE_HOME": str(home), "TRAINFORGE_DISPATCHER_POLL_INTERVAL_S": "0.2"})
    return env


def dev_client(url: str, home: Path) -> httpx.Client:
    """An httpx client of the embedded team ``dev``, with the token `trainforge serve` minted."""
    token = (home / "dev-token").read_text().strip()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


@contextmanager
def serve_process(env: dict[str, str], log_path: Path, *, timeout_s: float = 90,
                  preexec_fn: Callable[[], None] | None = None) -> Iterator[str]:
    """`trainforge serve` as a real process on a free loopback port, its output in
    ``log_path``; yields its URL once /readyz answers 200, and terminates it afterwards."""
    import subprocess
    import sys
    import time

    import httpx

    port = free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "trainforge", "serve", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real S3-protocol server (moto in server mode) on loopback; yields its endpoint URL.

    boto3 talks HTTP to it exactly as to AWS or MinIO. TRAINFORGE_S3_ENDPOINT_URL and dummy
    credentials are set for the whole session. Its request recorder (see ``s3_requests``)
    writes into a temporary file, read before moto is imported.
    """
    os.environ.setdefault("MOTO_RECORDER_FILEPATH",
                          str(tmp_path_factory.mktemp("moto") / "requests.jsonl"))
    from moto.server import ThreadedMotoServer

    from trainforge.storage.factory import clear_store_cache

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in _S3_ENV}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "TRAINFORGE_S3_ENDPOINT_URL": endpoint,
        }
    )
    clear_store_cache()
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clear_store_cache()


_S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
           "TRAINFORGE_S3_ENDPOINT_URL")


@pytest.fixture()
def s3_bucket(s3_server: str) -> str:
    """A new, empty bucket on the loopback S3 server; yields its name."""
    import boto3

    name = f"tf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture()
def s3_requests(s3_server: str) -> Iterator[Callable[[], list[str]]]:
    """The S3 server's own request log for one test: returns ``"METHOD bucket/key?query"``
    (percent-decoded) for every request the server received since the test started.

    Uses moto's recorder (``/moto-api/recorder/…``): what the server saw, whoever sent it.
    """
    import json
    from urllib.parse import unquote

    import httpx

    api = f"{s3_server}/moto-api/recorder"
    httpx.post(f"{api}/reset-recording", timeout=10).raise_for_status()
    httpx.post(f"{api}/start-recording", timeout=10).raise_for_status()

    def requests() -> list[str]:
        text = httpx.get(f"{api}/download-recording", timeout=10).text
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
        return [f"{e['method']} {unquote(str(e['url']).split('://', 1)[-1].split('/', 1)[-1])}"
                for e in entries]

    try:
        yield requests
    finally:
        httpx.post(f"{api}/stop-recording", timeout=10)
