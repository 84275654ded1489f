"""Python client of the trainforge REST API.

Example::

    from trainforge.client import Client

    with Client() as client:           # TRAINFORGE_URL / TRAINFORGE_TOKEN, or the embedded dev
        job = client.submit(spec)      # retry-safe: one Idempotency-Key per call
        job = client.wait(job["id"], on_update=print)
        client.download(job["id"], Path("out"))
        client.pull_model("ppe", "champion", Path("models/ppe"), only=["onnx"])

Responses are the API's JSON as dicts (see docs/openapi.json for their fields).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import httpx

from trainforge.constants import ENV_TOKEN, ENV_URL
from trainforge.errors import InvalidRequest, NotFound, TrainforgeError
from trainforge.settings import get_common_settings
from trainforge.spec import JobSpec

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
# Statuses worth retrying: the request may not have been processed, or the server is restarting.
_RETRY_STATUS = frozenset({502, 503, 504})


class ApiError(TrainforgeError):
    """The API answered with an error (its problem+json ``code`` and ``detail``)."""

    def __init__(self, message: str, *, status: int = 0, code: str = "api_error",
                 errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.errors = errors or []

    def __reduce__(self) -> Any:
        return (_rebuild_api_error, (self.message, self.status, self.code, self.errors))


def _rebuild_api_error(message: str, status: int, code: str,
                       errors: list[dict[str, str]]) -> ApiError:
    return ApiError(message, status=status, code=code, errors=errors)


class JobFailed(TrainforgeError):
    """:meth:`Client.wait` saw the job end in FAILED or CANCELLED."""

    code = "job_failed"

    def __init__(self, message: str, job: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.job = dict(job or {})

    def __reduce__(self) -> Any:
        return (JobFailed, (self.message, self.job))

    @classmethod
    def of(cls, job: Mapping[str, Any]) -> JobFailed:
        """The failure of a job that ended FAILED or CANCELLED, with its error if it has one."""
        error = job.get("error") or {}
        return cls(f"job {job['id']} {job['state']}"
                   + (f": {error.get('code')}: {error.get('message')}" if error else ""), job)


#: Seconds an idle connection is kept for the next request. Below the server's own keep-alive
#: (uvicorn closes idle connections after 5 s, as httpx would reuse them): at equal values a
#: request sent on a connection the server is closing fails with "Server disconnected".
KEEPALIVE_EXPIRY_S = 2.0

#: New listings :meth:`Client.download` makes when a file of an incomplete listing changed
#: before its download (a run's log gets its last lines as the run exits: one is enough).
RELISTS_WHILE_INCOMPLETE = 3

#: ``on_progress(file name, bytes so far, bytes in all)`` during a download.
Progress = Callable[[str, int, int], None]

#: ``pull_model(only=…)``: the kinds of files to fetch, by file-name ending.
FILE_KINDS: dict[str, tuple[str, ...]] = {"onnx": (".onnx",), "engine": (".engine",),
                                          "pt": (".pt",)}


@dataclass(frozen=True)
class PulledModel:
    """What :meth:`Client.pull_model` wrote."""

    name: str
    #: The version the ref resolved to (once: every file is of it).
    version: str
    #: Every file of the pull, fetched now or already there with the right sha256.
    paths: list[Path]
    #: The names of the files fetched now (the others were kept).
    fetched: list[str]
    #: Triton's config.pbtxt (``layout="triton"``), else None.
    config: Path | None = None


@dataclass(frozen=True)
class VerifiedModel:
    """What :meth:`Client.verify_model` checked."""

    name: str
    version: str
    #: Every file read, manifest.json first.
    files: list[str]
    #: One line per problem; empty when every file matches the manifest.
    problems: list[str]


def default_token() -> str | None:
    """TRAINFORGE_TOKEN, else the embedded server's ``$TRAINFORGE_HOME/dev-token``."""
    token = os.environ.get(ENV_TOKEN)
    if token:
        return token.strip()
    path = get_common_settings().home / "dev-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class Client:
    """A thin, typed wrapper over the REST API.

    Args:
        base_url: API URL (default TRAINFORGE_URL, else http://127.0.0.1:8000).
        token: bearer token (default TRAINFORGE_TOKEN, else the embedded dev-token).
        timeout: seconds per request.
        retries: extra tries for requests that are safe to repeat (reads, and submissions,
            which carry an Idempotency-Key) after a connection error or a 502/503/504.
        transport: an httpx transport (tests pass the app's ASGI/WSGI transport).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get(ENV_URL) or DEFAULT_URL).rstrip("/")
        token = token or default_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries = retries
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport,
            limits=httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S),
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _raise_for(response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            problem = response.json()
        except ValueError:
            problem = {}
        detail = problem.get("detail") or response.text[:500] or response.reason_phrase
        raise ApiError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} "
            f"{detail}",
            status=response.status_code,
            code=str(problem.get("code", "http_error")),
            errors=problem.get("errors"),
        )

    def _request(self, method: str, path: str, *, retry: bool, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Never reached the server: safe to repeat any request.
                if last:
                    raise ApiError(f"cannot reach {self.base_url}: {exc}", code="unreachable") \
                        from None
            except httpx.TransportError as exc:
                if not retry or last:
                    raise ApiError(f"{method} {path} failed: {exc}", code="transport") from None
            else:
                if not (retry and response.status_code in _RETRY_STATUS and not last):
                    self._raise_for(response)
                    return response
            time.sleep(min(0.5 * 2**attempt, 8.0))
        raise AssertionError("unreachable")  # the loop returns or raises

    # --- jobs ------------------------------------------------------------------------------

    def submit(
        self, spec: JobSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Submit a job; retries reuse one Idempotency-Key, so it is accepted once.

        Args:
            spec: a JobSpec or the mapping form of one.
            idempotency_key: default a fresh UUID per call.

        Returns:
            The job (state QUEUED).

        Raises:
            ApiError: refused (e.g. ``validation_failed`` with ``errors``, ``quota_exceeded``).
        """
        key = idempotency_key or str(uuid.uuid4())
        response = self._request("POST", "/v1/jobs", retry=True, json={"spec": _spec_body(spec)},
                                 headers={"Idempotency-Key": key})
        job: dict[str, Any] = response.json()
        return job

    def resume(self, job_id: str, *, epochs: int | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        """Resume a cancelled or failed training job: a new job that continues its last
        checkpoint; retries reuse one Idempotency-Key, so it is accepted once.

        Args:
            job_id: the stopped job.
            epochs: the new total of epochs (default: the stopped job's).
            idempotency_key: default a fresh UUID per call.

        Returns:
            The new job (state QUEUED, ``resumed_from`` = ``job_id``).

        Raises:
            ApiError: refused (``job_not_resumable`` with what to do instead, ``spec_invalid``
                for too few epochs, ``quota_exceeded``…).
        """
        key = idempotency_key or str(uuid.uuid4())
        body = {"epochs": epochs} if epochs is not None else {}
        response = self._request("POST", f"/v1/jobs/{job_id}/resume", retry=True, json=body,
                                 headers={"Idempotency-Key": key})
        job: dict[str, Any] = response.json()
        return job

    def get(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}", retry=True).json()
        return job

    def list_jobs(
        self, *, state: str | list[str] | None = None, kind: str | None = None,
        page_size: int = 50,
    ) -> Iterator[dict[str, Any]]:
        """All of the team's jobs (newest first), fetching pages as needed."""
        params: dict[str, Any] = {"limit": page_size}
        if state:
            params["state"] = [state] if isinstance(state, str) else state
        if kind:
            params["kind"] = kind
        return self._pages("/v1/jobs", params)

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items of every page of a listing, fetching the next page as needed."""
        cursor: str | None = None
        while True:
            if cursor:
                params["cursor"] = cursor
            page = self._request("GET", path, retry=True, params=params).json()
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = self._request("POST", f"/v1/jobs/{job_id}/cancel",
                                            retry=False).json()
        return job

    def events(self, job_id: str, *, after: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """The job's events after event id ``after``, oldest first, at most ``limit`` of them
        (the API's most is 1000)."""
        page = self._request("GET", f"/v1/jobs/{job_id}/events", retry=True,
                             params={"after": after, "limit": limit}).json()
        items: list[dict[str, Any]] = page["items"]
        return items

    def stream_events(self, job_id: str, *, after: int = 0) -> Iterator[dict[str, Any]]:
        """Events as they happen (server-sent events) until the job is done."""
        headers = {"Accept": "text/event-stream"}
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", params={"after": after},
                               headers=headers, timeout=None) as response:
            if not response.is_success:
                response.read()
                self._raise_for(response)
            data: list[str] = []
            for line in response.iter_lines():
                if line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    yield json.loads("\n".join(data))
                    data = []

    def logs(self, job_id: str, *, attempt: int | None = None) -> str:
        params = {"attempt": attempt} if attempt else {}
        return self._request("GET", f"/v1/jobs/{job_id}/logs", retry=True, params=params).text

    def follow_logs(self, job_id: str, *, attempt: int | None = None) -> Iterator[str]:
        """The log as it grows, until the attempt (or, by default, the job) is over."""
        params: dict[str, Any] = {"follow": "true"}
        if attempt:
            params["attempt"] = attempt
        with self._http.stream("GET", f"/v1/jobs/{job_id}/logs", params=params,
                               timeout=None) as response:
            if not response.is_success:
                response.read()
                self._raise_for(response)
            yield from response.iter_text()

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's artifacts (name, size, sha256, url); see :meth:`artifact_list` for
        whether they are complete."""
        items: list[dict[str, Any]] = self.artifact_list(job_id)["items"]
        return items

    def artifact_list(self, job_id: str) -> dict[str, Any]:
        """``{"items": [...], "complete": bool}``: ``complete`` is false until the job
        SUCCEEDED and its run exited (a running, failed or cancelled job's artifacts are what
        it wrote so far)."""
        page: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}/artifacts",
                                             retry=True).json()
        return page

    def download(self, job_id: str, dest: Path, *,
                 on_progress: Progress | None = None) -> list[Path]:
        """Download every artifact under ``dest``, checking each file's sha256 (see
        :meth:`fetch_file`: a file already there with the right sha256 is kept).

        Until the listing is complete (:meth:`artifact_list`) the job may rewrite a file
        between its listing and its download: a run reports SUCCEEDED before it exits and
        uploads the last lines of its log as it exits, so ``wait`` then ``download`` meets a
        log that changed. A checksum that differs then means "changed", not "corrupt": the
        artifacts are listed again and the download goes on from the new listing (the files
        already fetched are kept), at most :data:`RELISTS_WHILE_INCOMPLETE` times.

        Raises:
            ApiError: a download failed or its checksum does not match (in a complete listing,
                or still after the new listings).
        """
        relists = 0
        while True:
            listing = self.artifact_list(job_id)
            paths = []
            try:
                for item in listing["items"]:
                    paths.append(_inside(dest, item["name"]))
                    self.fetch_file(item, paths[-1], on_progress=on_progress)
                return paths
            except ApiError as exc:
                if (exc.code != "checksum_mismatch" or listing["complete"]
                        or relists >= RELISTS_WHILE_INCOMPLETE):
                    raise
                relists += 1

    def fetch_file(self, item: Mapping[str, Any], target: Path, *,
                   on_progress: Progress | None = None) -> bool:
        """Download one listed file (``{"name", "size", "sha256", "url"}``) to ``target``.

        Checked: the bytes must have the listed sha256. Atomic: they are written to a
        temporary name beside ``target`` and renamed once checked, so ``target`` is either
        absent, the old file or the whole new one. Resumable: a ``target`` already there with
        the listed sha256 is kept without a download.

        Returns:
            True when it downloaded, False when ``target`` was already the listed file.

        Raises:
            ApiError: the download failed, or its sha256 differs (``checksum_mismatch``).
        """
        # Here, not at the top: the storage package brings boto3, which the CLI's start-up
        # does not need.
        from trainforge.storage.base import sha256_file

        name, size = str(item["name"]), int(item["size"])
        if target.is_file() and target.stat().st_size == size \
                and sha256_file(target) == item["sha256"]:
            if on_progress is not None:
                on_progress(name, size, size)
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.part")
        digest = hashlib.sha256()
        done = 0
        try:
            with self._open_url(item["url"]) as response:
                if not response.is_success:
                    response.read()
                    self._raise_for(response)
                with partial.open("wb") as fh:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        fh.write(chunk)
                        done += len(chunk)
                        if on_progress is not None:
                            on_progress(name, done, size)
                    fh.flush()
                    os.fsync(fh.fileno())
            if digest.hexdigest() != item["sha256"]:
                raise ApiError(f"{name}: sha256 mismatch after download; try again",
                               code="checksum_mismatch")
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return True

    def _open_url(self, url: str) -> Any:
        # A presigned S3 URL carries its own authorisation: never send it our bearer token.
        if url.startswith(("http://", "https://")) and not url.startswith(self.base_url):
            return httpx.stream("GET", url, timeout=None, follow_redirects=True)
        return self._http.stream("GET", url, timeout=None)

    def wait(
        self,
        job_id: str,
        *,
        poll_s: float = 2.0,
        timeout_s: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the job is terminal.

        Args:
            on_update: called with the job after every poll (progress bars).

        Returns:
            The SUCCEEDED job.

        Raises:
            JobFailed: it ended FAILED or CANCELLED.
            TimeoutError: ``timeout_s`` passed first.
        """
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if on_update is not None:
                on_update(job)
            if job["state"] in TERMINAL:
                if job["state"] != "SUCCEEDED":
                    raise JobFailed.of(job)
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s}s")
            time.sleep(poll_s)

    def validate_dataset(self, uri: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request(
            "POST", "/v1/datasets/validate", retry=True, json={"uri": uri}
        ).json()
        return result

    # --- schedules ---------------------------------------------------------------------------

    def create_schedule(
        self,
        spec: JobSpec | Mapping[str, Any],
        *,
        cron: str,
        timezone: str = "UTC",
        only_if_dataset_changed: bool = True,
        name: str | None = None,
        paused: bool = False,
    ) -> dict[str, Any]:
        """Re-submit ``spec`` at the times of ``cron`` (5 fields, on ``timezone``'s clock).

        Args:
            only_if_dataset_changed: skip a fire time when the dataset's fingerprint is the
                one the last submitted job was given.
            name: default the spec's name.

        Returns:
            The schedule, with its ``next_fire_at`` (UTC).

        Raises:
            ApiError: refused (``validation_failed`` with ``errors`` naming ``cron``,
                ``timezone`` or a ``spec.…`` field; ``limit_exceeded``).
        """
        body: dict[str, Any] = {"cron": cron, "timezone": timezone, "spec": _spec_body(spec),
                                "only_if_dataset_changed": only_if_dataset_changed,
                                "paused": paused}
        if name is not None:
            body["name"] = name
        schedule: dict[str, Any] = self._request("POST", "/v1/schedules", retry=False,
                                                 json=body).json()
        return schedule

    def list_schedules(self, *, page_size: int = 50) -> Iterator[dict[str, Any]]:
        """All of the team's schedules (newest first)."""
        return self._pages("/v1/schedules", {"limit": page_size})

    def get_schedule(self, schedule_id: str) -> dict[str, Any]:
        """A schedule with its ``next_fire_at`` and ``recent_runs``."""
        schedule: dict[str, Any] = self._request("GET", f"/v1/schedules/{schedule_id}",
                                                 retry=True).json()
        return schedule

    def update_schedule(self, schedule_id: str, **changes: Any) -> dict[str, Any]:
        """Change fields of a schedule (``paused``, ``cron``, ``timezone``, ``spec``, …)."""
        if isinstance(changes.get("spec"), JobSpec):
            changes["spec"] = _spec_body(changes["spec"])
        schedule: dict[str, Any] = self._request(
            "PATCH", f"/v1/schedules/{schedule_id}", retry=True, json=changes
        ).json()
        return schedule

    def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self.update_schedule(schedule_id, paused=True)

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Resume at the next cron time from now (times passed while paused do not run)."""
        return self.update_schedule(schedule_id, paused=False)

    def run_schedule(self, schedule_id: str) -> dict[str, Any]:
        """Fire a schedule now (the dispatcher's next loop; the dataset check still applies)."""
        schedule: dict[str, Any] = self._request("POST", f"/v1/schedules/{schedule_id}/run",
                                                 retry=False).json()
        return schedule

    def delete_schedule(self, schedule_id: str) -> None:
        """Delete a schedule and its runs (the jobs it submitted stay)."""
        self._request("DELETE", f"/v1/schedules/{schedule_id}", retry=False)

    def schedule_runs(self, schedule_id: str, *, page_size: int = 50
                      ) -> Iterator[dict[str, Any]]:
        """A schedule's runs, newest first: ``submitted`` (``job_id``), ``skipped`` or
        ``failed``, each with a ``message`` saying why."""
        return self._pages(f"/v1/schedules/{schedule_id}/runs", {"limit": page_size})

    # --- models ------------------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        """The team's models, each with its version count, newest version and aliases."""
        items: list[dict[str, Any]] = self._request("GET", "/v1/models",
                                                    retry=True).json()["items"]
        return items

    def get_model(self, name: str) -> dict[str, Any]:
        """A model: its versions (scores, gates, aliases, promotion decisions), its aliases
        and every alias move."""
        model: dict[str, Any] = self._request("GET", f"/v1/models/{name}", retry=True).json()
        return model

    def promote(self, name: str, version: str, *, alias: str = "champion", reason: str = "",
                expected_version: str | None = None) -> dict[str, Any]:
        """Point ``name@alias`` at ``version`` (a promotion, or a rollback to an older one).

        Args:
            expected_version: only if the alias points there now (``""``: only if unset).

        Raises:
            ApiError: ``alias_conflict`` (409) when the alias is elsewhere or moved meanwhile.
        """
        body: dict[str, Any] = {"version": version, "reason": reason}
        if expected_version is not None:
            body["expected_version"] = expected_version
        move: dict[str, Any] = self._request("POST", f"/v1/models/{name}/aliases/{alias}",
                                             retry=False, json=body).json()
        return move

    def compare_models(self, name: str, challenger: str, champion: str = "champion", *,
                       policy: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Two versions' recorded held-out scores side by side, with the policy's verdict."""
        body: dict[str, Any] = {"challenger": challenger, "champion": champion}
        if policy is not None:
            body["policy"] = dict(policy)
        comparison: dict[str, Any] = self._request("POST", f"/v1/models/{name}/compare",
                                                   retry=True, json=body).json()
        return comparison

    def get_model_version(self, name: str, ref: str = "latest") -> dict[str, Any]:
        """One version by id, alias (``champion``) or ``latest``: its manifest (files with
        size and sha256), scores, gates, dataset, source job, base model, aliases and
        promotion verdict. ``version`` says what ``ref`` resolved to."""
        detail: dict[str, Any] = self._request(
            "GET", f"/v1/models/{name}/versions/{quote(ref, safe='')}", retry=True).json()
        return detail

    def model_artifacts(self, name: str, ref: str = "latest") -> dict[str, Any]:
        """``{"model", "version", "items"}``: manifest.json and every published file of the
        version ``ref`` resolves to, each with size, sha256 and a download URL (≤ 15 min)."""
        listing: dict[str, Any] = self._request(
            "GET", f"/v1/models/{name}/versions/{quote(ref, safe='')}/artifacts",
            retry=True).json()
        return listing

    def pull_model(self, name: str, ref: str, dest: Path, *, only: Collection[str] = (),
                   layout: Literal["files", "triton"] = "files", gpu: str | None = None,
                   triton_version: int | None = None,
                   on_progress: Progress | None = None) -> PulledModel:
        """Download a version's files, each checked against the manifest's sha256, written
        atomically, and kept when already there (a pull that stopped resumes).

        Args:
            name: the model.
            ref: a version id, an alias (``champion``) or ``latest``; resolved once, so every
                file is of one version even if the alias moves meanwhile.
            dest: ``layout="files"``: the folder for the files; ``"triton"``: the root of a
                Triton model repository (``dest/name/config.pbtxt``, ``dest/name/<n>/``).
            only: file kinds to fetch (``onnx``, ``engine``, ``pt``); manifest.json always
                comes too. Default every file. Not with ``layout="triton"``.
            layout: plain files, or a Triton model repository (trainforge.triton).
            gpu: with ``layout="triton"``, serve the TensorRT engine built for this GPU
                (``nvidia-h100`` or ``nvidia-h100-fp16``) instead of the ONNX export.
            triton_version: Triton's version number (default: the one holding this version
                already, else the next).
            on_progress: called as bytes arrive (``name, done, total``).

        Raises:
            ApiError: unknown model, version or alias (404), or a failed or corrupt download.
            NotFound: no file of a requested kind.
            InvalidRequest: an option that does not fit the layout.
        """
        listing = self.model_artifacts(name, ref)
        version, items = str(listing["version"]), listing["items"]
        if layout == "triton":
            if only:
                raise InvalidRequest("the triton layout picks its own file: model.onnx, or "
                                     "the engine --gpu names")
            return self._pull_triton(name, version, items, dest, gpu, triton_version,
                                     on_progress)
        if gpu is not None or triton_version is not None:
            raise InvalidRequest("gpu and triton_version go with layout='triton'")
        paths, fetched = [], []
        for item in select_files(items, only):
            paths.append(_inside(dest, item["name"]))
            if self.fetch_file(item, paths[-1], on_progress=on_progress):
                fetched.append(item["name"])
        return PulledModel(name, version, paths, fetched)

    def _pull_triton(self, name: str, version: str, items: list[dict[str, Any]], repo: Path,
                     gpu: str | None, number: int | None,
                     on_progress: Progress | None) -> PulledModel:
        from trainforge import triton

        fetched: list[str] = []

        def fetch(item: Mapping[str, Any], target: Path) -> None:
            if self.fetch_file(item, target, on_progress=on_progress):
                fetched.append(str(item["name"]))

        manifest_item = next(i for i in items if i["name"] == "manifest.json")
        written = triton.write_repository(repo, name, self._get_json(manifest_item), items,
                                          fetch, gpu=gpu, number=number)
        return PulledModel(name, version, [*written.files, written.config], fetched,
                           written.config)

    def _get_json(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """A small listed JSON file (a manifest), checked against its sha256."""
        with self._open_url(item["url"]) as response:
            body = response.read()
            self._raise_for(response)
        if hashlib.sha256(body).hexdigest() != item["sha256"]:
            raise ApiError(f"{item['name']}: sha256 mismatch after download; try again",
                           code="checksum_mismatch")
        data: dict[str, Any] = json.loads(body)
        return data

    def verify_model(self, name: str, ref: str = "latest", *,
                     on_progress: Progress | None = None) -> VerifiedModel:
        """Download every file of a version through its links (nothing is written) and check
        each against the manifest's size and sha256.

        Returns:
            The version ``ref`` resolved to, the files read and the problems found.
        """
        listing = self.model_artifacts(name, ref)
        problems = []
        for item in listing["items"]:
            digest, size = hashlib.sha256(), 0
            with self._open_url(item["url"]) as response:
                if not response.is_success:
                    problems.append(f"{item['name']}: HTTP {response.status_code}")
                    continue
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    size += len(chunk)
                    if on_progress is not None:
                        on_progress(item["name"], size, item["size"])
            if size != item["size"]:
                problems.append(f"{item['name']}: size {size} != manifest {item['size']}")
            if digest.hexdigest() != item["sha256"]:
                problems.append(f"{item['name']}: sha256 differs from the manifest")
        return VerifiedModel(name, str(listing["version"]),
                             [i["name"] for i in listing["items"]], problems)

    # --- webhooks ----------------------------------------------------------------------------

    def create_webhook(self, url: str, events: list[str], *, description: str = ""
                       ) -> dict[str, Any]:
        """Subscribe ``url`` to ``events`` (``job.succeeded``, ``model.promoted``, …) of the
        team's jobs, models and schedules.

        Returns:
            The subscription with its ``secret`` (``whsec_…``): the only time it is shown.

        Raises:
            ApiError: ``webhook_destination_refused`` (422) for a URL the service will not
                call; ``validation_failed`` for an unknown event type.
        """
        body = {"url": url, "events": list(events), "description": description}
        webhook: dict[str, Any] = self._request("POST", "/v1/webhooks", retry=False,
                                                json=body).json()
        return webhook

    def list_webhooks(self, *, page_size: int = 50) -> Iterator[dict[str, Any]]:
        """The team's subscriptions, newest first (without their secrets)."""
        return self._pages("/v1/webhooks", {"limit": page_size})

    def delete_webhook(self, webhook_id: str) -> None:
        """Delete a subscription; nothing more is sent to it."""
        self._request("DELETE", f"/v1/webhooks/{webhook_id}", retry=False)

    def webhook_deliveries(self, webhook_id: str, *, page_size: int = 50
                           ) -> Iterator[dict[str, Any]]:
        """A subscription's deliveries, newest first: ``state`` (pending, delivered, failed,
        abandoned), ``attempts``, the receiver's ``last_status`` and ``last_error``."""
        return self._pages(f"/v1/webhooks/{webhook_id}/deliveries", {"limit": page_size})


def _inside(dest: Path, name: str) -> Path:
    """``dest / name``, refusing a name that would leave ``dest``."""
    target = (dest / name).resolve()
    if dest.resolve() not in target.parents:
        raise ApiError(f"refusing artifact name {name!r}: escapes {dest}")
    return target


def select_files(items: list[dict[str, Any]], only: Collection[str]) -> list[dict[str, Any]]:
    """``manifest.json`` and the files of the kinds in ``only`` (every file when empty).

    Raises:
        InvalidRequest: an unknown kind.
        NotFound: no file of a requested kind.
    """
    unknown = sorted(set(only) - set(FILE_KINDS))
    if unknown:
        raise InvalidRequest(f"unknown file kind(s) {', '.join(unknown)}; choose from "
                             f"{', '.join(FILE_KINDS)}")
    if not only:
        return items
    missing = [kind for kind in only
               if not any(i["name"].endswith(FILE_KINDS[kind]) for i in items)]
    if missing:
        present = ", ".join(i["name"] for i in items)
        raise NotFound(f"no {' or '.join(missing)} file in this version (it has {present})")
    endings = tuple(e for kind in only for e in FILE_KINDS[kind])
    return [i for i in items if i["name"] == "manifest.json" or i["name"].endswith(endings)]


def _spec_body(spec: JobSpec | Mapping[str, Any]) -> dict[str, Any]:
    """A spec as the API takes it (only the fields that were set, for a JobSpec)."""
    if isinstance(spec, JobSpec):
        return spec.model_dump(mode="json", exclude_unset=True)
    return dict(spec)
