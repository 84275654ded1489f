"""Image header probing: formats, headers past the first ranged GET, patched Pillow."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.fixtures.s3 import upload_tree
from trainforge.datasets import validate
from trainforge.datasets.images import HEADER_BYTES, ImageProblem, decode, probe_header
from trainforge.storage import S3Store


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "TIFF", "WEBP"])
def test_supported_formats_probe_and_decode(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (37, 23), (10, 200, 30)).save(buf, format=fmt)
    header = probe_header(buf.getvalue())
    assert (header.width, header.height, header.format) == (37, 23, fmt)
    assert decode(buf.getvalue()) == header


def _jpeg_with_big_header(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    # A large ICC profile (split over several APP2 segments) pushes SOF past the first GET.
    Image.new("RGB", size, (90, 90, 90)).save(buf, format="JPEG",
                                              icc_profile=b"x" * (HEADER_BYTES + 5000))
    return buf.getvalue()


def test_header_past_the_first_range_is_fetched_whole(
    dataset: Path, s3_bucket: str, s3_server: str
) -> None:
    big = _jpeg_with_big_header((48, 40))
    assert big.index(b"\xff\xc0") > HEADER_BYTES  # the size lives beyond the first GET
    (dataset / "train/images/train_00000.png").unlink()
    (dataset / "train/images/train_00000.jpg").write_bytes(big)
    upload_tree(S3Store(s3_bucket, endpoint_url=s3_server), dataset, "ds")
    report = validate(f"s3://{s3_bucket}/ds", decode=False)
    assert report.ok, report.format_text()
    assert report.sizes.common_sizes == {"32x32": 10, "48x40": 1}


def test_truncated_header_is_corrupt_not_unsupported() -> None:
    data = _jpeg_with_big_header((48, 40))[: HEADER_BYTES // 2]
    with pytest.raises(ImageProblem) as info:
        probe_header(data)
    assert info.value.code == "image_corrupt"


def test_ultralytics_pillow_patch_is_bypassed(dataset: Path) -> None:
    """Ultralytics patches Image.open to pip-install a HEIF plugin on unknown files; the
    training job imports Ultralytics, then validates: an odd file must not trigger that."""
    pytest.importorskip("ultralytics.utils.patches", reason="ultralytics is in the train extra")
    assert Image.open.__module__ != "PIL.Image"  # the patch is active in this process
    (dataset / "train/images/train_00000.png").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"0" * 64)
    report = validate(dataset)
    [p] = report.errors
    assert (p.code, p.file) == ("image_format_unsupported", "train/images/train_00000.png")
    assert "HEIF" in p.message
    assert "pi_heif" not in sys.modules


def test_remote_validation_reads_headers_not_images(
    dataset: Path, s3_bucket: str, s3_server: str
) -> None:
    import os

    from trainforge.storage import store_for_uri

    for image in (dataset / "train/images").glob("*.png"):  # big, incompressible images
        Image.frombytes("RGB", (800, 800), os.urandom(800 * 800 * 3)).save(
            image.with_suffix(".jpg"), quality=95)
        image.unlink()
    image_bytes = sum(p.stat().st_size for p in dataset.rglob("*.jpg"))
    assert image_bytes > 6 * 6 * HEADER_BYTES  # photos are megabytes; a header read is 64 KiB
    upload_tree(S3Store(s3_bucket, endpoint_url=s3_server), dataset, "ds")
    uri = f"s3://{s3_bucket}/ds"
    fetched: list[int] = []
    # Count the bytes every GetObject of the store validate() uses returns (botocore's event
    # hooks on the real client; nothing is stubbed).
    client = store_for_uri(uri)._client  # type: ignore[attr-defined]
    client.meta.events.register(
        "after-call.s3.GetObject",
        lambda http_response, parsed, **_: fetched.append(int(parsed["ContentLength"])))
    assert validate(uri, decode=False).ok
    headers_only = sum(fetched)
    fetched.clear()
    assert validate(uri, decode=True).ok
    full = sum(fetched)
    assert full >= image_bytes
    assert headers_only < image_bytes / 4, (headers_only, image_bytes)
