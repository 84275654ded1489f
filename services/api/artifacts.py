"""A job's artifacts: listing with size and sha256, and download links valid ≤ 15 minutes.

S3 objects get presigned URLs. Objects in a local-directory store (embedded mode) get a link
to this API's ``/v1/downloads/…`` route, signed with an HMAC over (job, name, expiry) so that
it works without a bearer token, exactly like a presigned URL.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import BinaryIO
from urllib.parse import quote

from services.api.schemas import ArtifactList, ArtifactOut
from services.api.state import AppState
from services.store import dispatch
from services.store import jobs as repo
from trainforge.errors import DownloadLinkInvalid, NotFound, ObjectNotFound
from trainforge.layout import job_prefix
from trainforge.states import JobState
from trainforge.storage import LocalStore, ObjectInfo, ObjectStore

#: How far a link's expiry may lie beyond ``download_url_ttl_s`` from now: replicas' clocks
#: differ by a little. More means the link was not issued by this API (or the TTL was lowered).
CLOCK_SLACK_S = 5

# (uri, etag) → sha256 of objects whose writer did not record one; an object rewritten in
# place gets a new etag, hence a new entry. Bounded: oldest entries go first.
_SHA_CACHE: OrderedDict[tuple[str, str], str] = OrderedDict()
_SHA_CACHE_SIZE = 4096
_SHA_LOCK = threading.Lock()


def _sha256_of(store: ObjectStore, info: ObjectInfo) -> str:
    cache_key = (store.uri(info.key), info.etag)
    with _SHA_LOCK:
        if cache_key in _SHA_CACHE:
            _SHA_CACHE.move_to_end(cache_key)
            return _SHA_CACHE[cache_key]
    digest = hashlib.sha256()
    with store.open_read(info.key) as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    with _SHA_LOCK:
        _SHA_CACHE[cache_key] = digest.hexdigest()
        while len(_SHA_CACHE) > _SHA_CACHE_SIZE:
            _SHA_CACHE.popitem(last=False)
    return digest.hexdigest()


def _sha256(store: ObjectStore, info: ObjectInfo) -> str:
    if info.sha256:
        return info.sha256
    head = store.head(info.key)  # trainforge's S3 writes keep the sha256 in the metadata
    if head.sha256:
        return head.sha256
    return _sha256_of(store, info)


def signature(secret: bytes, job_id: str, name: str, expires: int) -> str:
    message = f"download:{job_id}:{name}:{expires}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def list_artifacts(state: AppState, team: str, job_id: str, base_url: str) -> ArtifactList:
    """Every object under ``jobs/<id>/`` (spec, logs, checkpoints, training outputs), and
    whether that is all the job will write (``complete``: it SUCCEEDED and its run exited).

    Raises:
        JobNotFound: no such job for this team.
        StorageError: the object store failed (503; never an empty list instead).
    """
    with state.db.transaction() as session:
        job = repo.get_job(session, job_id, team=team)
        # Read before the listing: a job that completes meanwhile is listed as incomplete,
        # never the other way round.
        complete = job.state is JobState.SUCCEEDED and dispatch.outputs_final(session, job)
    store = state.artifacts
    prefix = state.key(job_prefix(job_id))
    ttl = state.settings.download_url_ttl_s
    expires = int(time.time()) + ttl
    items = []
    for info in store.list(prefix):
        name = info.key[len(prefix):]
        try:
            sha256 = _sha256(store, info)
        except ObjectNotFound:  # deleted since the listing: a listing is not a snapshot
            continue
        if isinstance(store, LocalStore):
            sig = signature(state.secret_key, job_id, name, expires)
            url = (f"{base_url.rstrip('/')}/v1/downloads/{job_id}/{quote(name)}"
                   f"?expires={expires}&signature={sig}")
        else:
            url = store.presign(info.key, expires_s=ttl)
        items.append(
            ArtifactOut(
                name=name,
                size=info.size,
                sha256=sha256,
                url=url,
                expires_at=datetime.fromtimestamp(expires, UTC),
            )
        )
    return ArtifactList(items=items, complete=complete)


def open_download(
    state: AppState, job_id: str, name: str, expires: int, sig: str
) -> tuple[BinaryIO, int]:
    """Check a download link and open the object.

    Returns:
        A reader (the caller closes it) and the object's size.

    Raises:
        DownloadLinkInvalid: wrong signature, expired, or expiring later than any link this
            API issues (``download_url_ttl_s`` from now): links are valid ≤ 15 minutes even
            when whoever holds the secret key signs a longer one.
        NotFound: the object is gone.
        StorageError: the object store failed (503).
    """
    expected = signature(state.secret_key, job_id, name, expires)
    if not hmac.compare_digest(expected.encode(), sig.encode()):
        raise DownloadLinkInvalid("the download link's signature does not match; list the "
                                  "artifacts again for a fresh link")
    now = time.time()
    if expires < now:
        raise DownloadLinkInvalid("the download link expired; list the artifacts again")
    if expires > now + state.settings.download_url_ttl_s + CLOCK_SLACK_S:
        raise DownloadLinkInvalid(
            f"the download link expires more than {state.settings.download_url_ttl_s} s from "
            "now, later than links are issued for; list the artifacts again for a fresh link"
        )
    return open_artifact(state, job_id, name)


def open_artifact(state: AppState, job_id: str, name: str) -> tuple[BinaryIO, int]:
    """Open ``jobs/<id>/<name>`` for a caller already allowed to read the job (a signed link,
    or the dashboard after its team check).

    Returns:
        A reader (the caller closes it) and the object's size.

    Raises:
        NotFound: no such object, or a name that would leave the job's prefix.
        StorageError: the object store failed (503).
    """
    if name.startswith("/") or ".." in name.split("/"):
        raise NotFound(f"job {job_id} has no artifact {name!r}")
    key = state.key(job_prefix(job_id) + name)
    try:
        info = state.artifacts.head(key)
        return state.artifacts.open_read(key), info.size
    except ObjectNotFound:
        raise NotFound(f"job {job_id} has no artifact {name!r}") from None


def iter_file(reader: BinaryIO, chunk: int = 1 << 20) -> Iterator[bytes]:
    with reader:
        while block := reader.read(chunk):
            yield block
