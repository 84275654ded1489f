"""S3 (and any S3-compatible endpoint) through boto3, with retries and the transfer manager."""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

from trainforge.errors import (
    BucketNotFound,
    ObjectNotFound,
    StorageAccessDenied,
    StorageCredentialsMissing,
    StorageError,
)
from trainforge.storage.base import ObjectInfo, sha256_file

# Adaptive retry mode backs off on throttling and 5xx; 8 attempts ride out a restarting MinIO.
_CLIENT_CONFIG = Config(
    retries={"max_attempts": 8, "mode": "adaptive"},
    max_pool_connections=32,
    connect_timeout=10,
    read_timeout=60,
)
#: Every failure botocore raises: a ClientError (the server answered an error) or a
#: BotoCoreError (no credentials, endpoint unreachable, timeouts, a connection dropped while
#: reading a body). All of them become StorageError (see _raise), never a raw exception.
_FAILURES = (ClientError, BotoCoreError)

# Multipart above 16 MiB, 8 parts in flight: saturates a node's NIC for checkpoints/weights.
_TRANSFER = TransferConfig(
    multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=8
)


class S3Store:
    """One S3 bucket."""

    def __init__(self, bucket: str, *, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.root_uri = f"s3://{bucket}"
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=_CLIENT_CONFIG
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _raise(self, exc: Exception, key: str) -> StorageError:
        where = self.uri(key)
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return StorageCredentialsMissing(
                f"no S3 credentials for {where}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "an AWS profile, or a service-account role"
            )
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchBucket"}:
                return BucketNotFound(
                    f"bucket {self.bucket!r} does not exist"
                    + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                    + ": create it or fix the URI"
                )
            if code in {"NoSuchKey", "404", "NotFound"}:
                return ObjectNotFound(f"no object {where}")
            if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
                return StorageAccessDenied(
                    f"access denied to {where} ({code}): check the credentials and the bucket "
                    "policy grant s3:GetObject/PutObject/ListBucket"
                )
            return StorageError(f"S3 error on {where}: {code}: {exc}")
        return StorageError(f"S3 error on {where}: {exc}")

    def _head_bucket_if_404(self, exc: ClientError, key: str) -> StorageError:
        # HEAD on a key answers a bare 404 for both a missing key and a missing bucket.
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as bucket_exc:
            return self._raise(
                ClientError({"Error": {"Code": "NoSuchBucket"}}, "HeadBucket")
                if bucket_exc.response.get("Error", {}).get("Code") in {"404", "NoSuchBucket"}
                else bucket_exc,
                key,
            )
        except BotoCoreError as bucket_exc:
            return self._raise(bucket_exc, key)
        return self._raise(exc, key)

    def get(self, key: str) -> bytes:
        try:
            return cast(bytes, self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except _FAILURES as exc:
            raise self._raise(exc, key) from None

    def open_read(self, key: str) -> BinaryIO:
        try:
            return cast(BinaryIO, self._client.get_object(Bucket=self.bucket, Key=key)["Body"])
        except _FAILURES as exc:
            raise self._raise(exc, key) from None

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """Bytes ``[start, start + length)`` of an object (fewer at its end): one ranged GET."""
        if start < 0 or length < 1:
            raise StorageError(f"bad byte range start={start} length={length}")
        try:
            resp = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}"
            )
            return cast(bytes, resp["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""  # start is at or past the end (an empty object)
            raise self._raise(exc, key) from None
        except BotoCoreError as exc:
            raise self._raise(exc, key) from None

    def download(self, key: str, dest: Path) -> ObjectInfo:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
        os.close(fd)
        try:
            self._client.download_file(self.bucket, key, tmp, Config=_TRANSFER)
            os.replace(tmp, dest)
        except _FAILURES as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, ClientError) and exc.response["Error"]["Code"] in {"404"}:
                raise self._head_bucket_if_404(exc, key) from None
            raise self._raise(exc, key) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.head(key)

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        digest = hashlib.sha256(data)
        extra: dict[str, Any] = {
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(digest.digest()).decode(),
            "Metadata": {"sha256": digest.hexdigest()},
        }
        if content_type:
            extra["ContentType"] = content_type
        try:
            resp = self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
        except _FAILURES as exc:
            raise self._raise(exc, key) from None
        return ObjectInfo(key, len(data), str(resp.get("ETag", "")).strip('"'), None,
                          digest.hexdigest())

    def upload(self, src: Path, key: str, *, content_type: str | None = None) -> ObjectInfo:
        sha = sha256_file(src)
        extra: dict[str, Any] = {"Metadata": {"sha256": sha}, "ChecksumAlgorithm": "SHA256"}
        if content_type:
            extra["ContentType"] = content_type
        try:
            self._client.upload_file(str(src), self.bucket, key, ExtraArgs=extra,
                                     Config=_TRANSFER)
        except _FAILURES as exc:
            raise self._raise(exc, key) from None
        except boto3.exceptions.S3UploadFailedError as exc:
            raise StorageError(f"upload of {src} to {self.uri(key)} failed: {exc}") from None
        info = self.head(key)
        return ObjectInfo(info.key, info.size, info.etag, info.last_modified, sha)

    def put_if_absent(self, key: str, data: bytes, *, content_type: str | None = None) -> bool:
        digest = hashlib.sha256(data)
        extra: dict[str, Any] = {
            "ChecksumAlgorithm": "SHA256",
            "ChecksumSHA256": base64.b64encode(digest.digest()).decode(),
            "Metadata": {"sha256": digest.hexdigest()},
            # S3 conditional writes: the PUT fails with 412 if the key already exists.
            "IfNoneMatch": "*",
        }
        if content_type:
            extra["ContentType"] = content_type
        try:
            self._client.put_object(Bucket=self.bucket, Key=key, Body=data, **extra)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"PreconditionFailed", "412", "ConditionalRequestConflict"}:
                return False
            raise self._raise(exc, key) from None
        except BotoCoreError as exc:
            raise self._raise(exc, key) from None

    def copy(self, src_key: str, dest_key: str) -> ObjectInfo:
        source = self.head(src_key)
        # The managed copy: one CopyObject, or UploadPartCopy parts above the multipart
        # threshold (a single CopyObject stops at 5 GiB). Multipart copies do not carry the
        # metadata over by themselves, so the sha256 is set explicitly.
        extra: dict[str, Any] = {"MetadataDirective": "REPLACE"}
        if source.sha256:
            extra["Metadata"] = {"sha256": source.sha256}
        try:
            self._client.copy({"Bucket": self.bucket, "Key": src_key}, self.bucket, dest_key,
                              ExtraArgs=extra, Config=_TRANSFER)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey"}:
                raise self._raise(exc, src_key) from None
            raise self._raise(exc, dest_key) from None
        except BotoCoreError as exc:
            raise self._raise(exc, dest_key) from None
        return self.head(dest_key)

    def head(self, key: str) -> ObjectInfo:
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            raise self._head_bucket_if_404(exc, key) from None
        except BotoCoreError as exc:
            raise self._raise(exc, key) from None
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            etag=str(resp.get("ETag", "")).strip('"'),
            last_modified=resp.get("LastModified"),
            sha256=resp.get("Metadata", {}).get("sha256"),
        )

    def checksum_sha256(self, key: str) -> str | None:
        """The sha256 (hex) S3 verified when the object was written, if S3 holds a full-object one.

        Single-part uploads carry a full-object ChecksumSHA256; multipart uploads (ETag ``…-N``)
        carry a checksum of part checksums, which is not a file digest, so None is returned.

        Raises:
            ObjectNotFound: no such object.
        """
        try:
            resp = self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            raise self._head_bucket_if_404(exc, key) from None
        except BotoCoreError as exc:
            raise self._raise(exc, key) from None
        checksum = resp.get("ChecksumSHA256")
        multipart = "-" in str(resp.get("ETag", "")) or "-" in str(checksum or "")
        if not checksum or multipart or resp.get("ChecksumType") == "COMPOSITE":
            return None
        return base64.b64decode(checksum).hex()

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self._client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item["Size"]),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item.get("LastModified"),
                    )
        except _FAILURES as exc:
            raise self._raise(exc, prefix) from None

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except _FAILURES as exc:
            raise self._raise(exc, key) from None

    def presign(self, key: str, *, expires_s: int = 900) -> str:
        if not 1 <= expires_s <= 900:
            raise StorageError("presigned URLs expire within 15 minutes (1..900 s)")
        try:
            return cast(
                str,
                self._client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key},
                    ExpiresIn=expires_s,
                ),
            )
        except _FAILURES as exc:
            raise self._raise(exc, key) from None
