"""A job's artifacts: listing with size and sha256, and download links valid ≤ 15 minutes.

S3 objects get presigned URLs. Objects in a local-directory store (embedded mode) get a link
to this API's ``/v1/downloads/…`` route, signed with an HMAC over (what it opens, expiry) so
that it works without a bearer token, exactly like a presigned URL. Job artifacts and model
files (services/api/model_files.py) share this one mechanism: :class:`LinkSigner` issues the
links of one answer, :func:`check_link` checks one.
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


def _sign(secret: bytes, scope: str, expires: int) -> str:
    return hmac.new(secret, f"{scope}:{expires}".encode(), hashlib.sha256).hexdigest()


def job_scope(job_id: str, name: str) -> str:
    """What a job artifact's link opens (the signed part of the link besides its expiry)."""
    return f"download:{job_id}:{name}"


def signature(secret: bytes, job_id: str, name: str, expires: int) -> str:
    """The signature of a link to ``jobs/<job_id>/<name>``."""
    return _sign(secret, job_scope(job_id, name), expires)


class LinkSigner:
    """Issues the download links of one answer: every link expires at the same moment,
    ``download_url_ttl_s`` (≤ 15 minutes) from now.

    Args:
        state: the app's state (secret key, TTL).
        base_url: the API's URL as the caller reached it (for API-served links).
    """

    def __init__(self, state: AppState, base_url: str) -> None:
        self._secret = state.secret_key
        self._base_url = base_url.rstrip("/")
        self.ttl = state.settings.download_url_ttl_s
        self.expires = int(time.time()) + self.ttl
        self.expires_at = datetime.fromtimestamp(self.expires, UTC)

    def url(self, store: ObjectStore, key: str, *, scope: str, api_path: str) -> str:
        """A presigned URL for an S3 object; for a local-directory store, a link to
        ``api_path`` (already percent-encoded) signed over ``scope``."""
        if isinstance(store, LocalStore):
            sig = _sign(self._secret, scope, self.expires)
            return f"{self._base_url}{api_path}?expires={self.expires}&signature={sig}"
        return store.presign(key, expires_s=self.ttl)


def check_link(state: AppState, scope: str, expires: int, sig: str) -> None:
    """Check an API-served link to ``scope``.

    Raises:
        DownloadLinkInvalid: wrong signature, expired, or expiring later than any link this
            API issues (``download_url_ttl_s`` from now): links are valid ≤ 15 minutes even
            when whoever holds the secret key signs a longer one.
    """
    expected = _sign(state.secret_key, scope, expires)
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
    links = LinkSigner(state, base_url)
    items = []
    for info in store.list(prefix):
        name = info.key[len(prefix):]
        try:
            sha256 = _sha256(store, info)
        except ObjectNotFound:  # deleted since the listing: a listing is not a snapshot
            continue
        url = links.url(store, info.key, scope=job_scope(job_id, name),
                        api_path=f"/v1/downloads/{job_id}/{quote(name)}")
        items.append(
            ArtifactOut(name=name, size=info.size, sha256=sha256, url=url,
                        expires_at=links.expires_at)
        )
    return ArtifactList(items=items, complete=complete)


def open_download(
    state: AppState, job_id: str, name: str, expires: int, sig: str
) -> tuple[BinaryIO, int]:
    """Check a download link and open the object.

    Returns:
        A reader (the caller closes it) and the object's size.

    Raises:
        DownloadLinkInvalid: see :func:`check_link`.
        NotFound: the object is gone.
        StorageError: the object store failed (503).
    """
    check_link(state, job_scope(job_id, name), expires, sig)
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
    missing = f"job {job_id} has no artifact {name!r}"
    if name.startswith("/") or ".." in name.split("/"):
        raise NotFound(missing)
    return open_object(state.artifacts, state.key(job_prefix(job_id) + name), missing)


def open_object(store: ObjectStore, key: str, missing: str) -> tuple[BinaryIO, int]:
    """A reader of one object and its size.

    Raises:
        NotFound: no such object (``missing`` says what).
        StorageError: the object store failed (503).
    """
    try:
        info = store.head(key)
        return store.open_read(key), info.size
    except ObjectNotFound:
        raise NotFound(missing) from None


def iter_file(reader: BinaryIO, chunk: int = 1 << 20) -> Iterator[bytes]:
    with reader:
        while block := reader.read(chunk):
            yield block
