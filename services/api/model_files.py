"""A model version's files through the API: download links for tools, and the files
themselves behind those links or the dashboard's session.

The links are the job artifacts' (services/api/artifacts.py): presigned URLs for an S3 models
store, the API's own signed ``/v1/downloads/models/…`` links for a local one. Every link of one
answer is of one version: the ref is resolved once and the list is the manifest of that
version, which never changes once published, so an alias moving meanwhile changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import BinaryIO
from urllib.parse import quote

from services.api.artifacts import LinkSigner, check_link, open_object
from services.api.schemas import ArtifactOut, ModelArtifactList
from services.api.state import AppState
from trainforge import aliases, registry
from trainforge.errors import NotFound, ObjectNotFound
from trainforge.layout import model_prefix
from trainforge.storage import join_key

MANIFEST = "manifest.json"


def model_scope(team: str, name: str, version: str, file: str) -> str:
    """What a model file's link opens (the signed part of the link besides its expiry)."""
    return f"model:{team}:{name}:{version}:{file}"


def list_files(state: AppState, team: str, name: str, ref: str, base_url: str
               ) -> ModelArtifactList:
    """``manifest.json`` and every file it lists, each with a download link.

    Raises:
        NotFound: no such model, version or alias in the team's registry (another team's
            model is the same 404).
        StorageError: the models store failed (503).
    """
    root = state.settings.team_models_uri(team)
    try:
        version = aliases.resolve_version(root, name, ref)
    except registry.ModelNotFound as exc:
        raise NotFound(exc.message) from None
    store, base = registry.open_registry(root)
    prefix = join_key(base, model_prefix(name, version))
    try:
        body = store.get(prefix + MANIFEST)
    except ObjectNotFound:
        raise NotFound(f"model {name}@{version} is not published") from None
    manifest = json.loads(body)
    files = [{"name": MANIFEST, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()},
             *manifest.get("artifacts", [])]
    links = LinkSigner(state, base_url)
    items = []
    for file in files:
        api_path = "/v1/downloads/models/" + "/".join(
            quote(part, safe="") for part in (team, name, version, file["name"]))
        url = links.url(store, prefix + file["name"],
                        scope=model_scope(team, name, version, file["name"]),
                        api_path=api_path)
        items.append(ArtifactOut(name=file["name"], size=file["size"], sha256=file["sha256"],
                                 url=url, expires_at=links.expires_at))
    return ModelArtifactList(model=name, version=version, items=items)


def open_download(state: AppState, team: str, name: str, version: str, file: str,
                  raw_query: str) -> tuple[BinaryIO, int]:
    """Check a model file's link (its raw query string) and open the file.

    Raises:
        DownloadLinkInvalid: see :func:`services.api.artifacts.check_link`.
        NotFound: the file is gone.
    """
    check_link(state, model_scope(team, name, version, file), raw_query)
    return open_file(state, team, name, version, file)


def open_file(state: AppState, team: str, name: str, version: str, file: str
              ) -> tuple[BinaryIO, int]:
    """Open one file of ``team``'s ``name@version`` for a caller already allowed to read it
    (a signed link, or the dashboard after its team check).

    Returns:
        A reader (the caller closes it) and the file's size.

    Raises:
        NotFound: no such file, or a name that would leave the version's folder.
    """
    missing = f"model {name}@{version} has no file {file!r}"
    if "/" in file or file in {"", ".", ".."}:
        raise NotFound(missing)
    store, base = registry.open_registry(state.settings.team_models_uri(team))
    return open_object(store, join_key(base, model_prefix(name, version), file), missing)
