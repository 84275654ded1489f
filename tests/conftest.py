"""Fixtures named after the real services they start or connect to."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")


def free_port() -> int:
    """A free TCP port on loopback (for servers a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A real S3-protocol server (moto in server mode) on loopback; yields its endpoint URL.

    boto3 talks HTTP to it exactly as to AWS or MinIO. TRAINFORGE_S3_ENDPOINT_URL and dummy
    credentials are set for the whole session.
    """
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
