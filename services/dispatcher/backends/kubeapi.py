"""A deliberately small Kubernetes API client: custom objects only, over httpx.

The dispatcher needs four calls (create, get, delete a namespaced custom object; list is there
for operators' tooling) and nothing else, so it does not pull in the official ``kubernetes``
package. In a pod it authenticates with the projected service-account token and verifies the API
server with the service-account CA, exactly like ``rest.InClusterConfig()`` in client-go.
"""

from __future__ import annotations

import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from trainforge.constants import ENV_KUBE_API_URL
from trainforge.errors import (
    BackendConfigError,
    KubernetesAlreadyExists,
    KubernetesApiError,
    KubernetesNotFound,
)

logger = logging.getLogger(__name__)

#: Where the kubelet projects a pod's service-account credentials.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class CustomResource:
    """Group, version and plural name of a custom resource (the URL path parts)."""

    group: str
    version: str
    plural: str


class KubeApi:
    """Create, read and delete namespaced custom objects.

    Args:
        base_url: The API server, e.g. ``https://10.0.0.1:443`` (no trailing path).
        token_file: A bearer-token file, re-read on every request because the kubelet rotates
            projected tokens (they expire after about an hour).
        ca_file: CA bundle that signed the API server's certificate; ``None`` uses the system
            trust store (only sensible for plain-HTTP test servers or public endpoints).
        timeout: Seconds per request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token_file: Path | None = None,
        ca_file: Path | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token_file = token_file
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else True
        )
        self._client = httpx.Client(
            base_url=self.base_url, verify=verify, timeout=timeout, transport=transport
        )

    @classmethod
    def from_environment(cls, *, timeout: float = 10.0) -> KubeApi:
        """The in-cluster client, or a plain base URL from ``TRAINFORGE_KUBE_API_URL``.

        Raises:
            BackendConfigError: outside a pod and with no ``TRAINFORGE_KUBE_API_URL``.
        """
        override = os.environ.get(ENV_KUBE_API_URL)
        if override:
            token = SERVICE_ACCOUNT_DIR / "token"
            return cls(override, token_file=token if token.is_file() else None, timeout=timeout)
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        token = SERVICE_ACCOUNT_DIR / "token"
        if not host or not token.is_file():
            raise BackendConfigError(
                "the KubeRay backend found no Kubernetes API server: run it in a pod with a "
                f"service-account token mounted at {SERVICE_ACCOUNT_DIR}, or set "
                f"{ENV_KUBE_API_URL}=https://host:port"
            )
        if ":" in host:  # a bare IPv6 address needs brackets in a URL
            host = f"[{host}]"
        return cls(
            f"https://{host}:{port}",
            token_file=token,
            ca_file=SERVICE_ACCOUNT_DIR / "ca.crt",
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    # -- the calls -------------------------------------------------------------------------

    def create(self, resource: CustomResource, namespace: str, body: dict[str, Any]) -> Any:
        """POST a new object; returns the object as stored by the server.

        Raises:
            KubernetesAlreadyExists: an object with that name exists (HTTP 409).
            KubernetesApiError: any other refusal or transport failure.
        """
        return self._request("POST", _collection_path(resource, namespace), json=body)

    def get(self, resource: CustomResource, namespace: str, name: str) -> Any:
        """GET one object.

        Raises:
            KubernetesNotFound: no such object (HTTP 404).
            KubernetesApiError: any other refusal or transport failure.
        """
        return self._request("GET", _object_path(resource, namespace, name))

    def list(
        self, resource: CustomResource, namespace: str, *, label_selector: str | None = None
    ) -> list[Any]:
        """GET the objects of a namespace, optionally filtered by a label selector."""
        params = {"labelSelector": label_selector} if label_selector else None
        body = self._request("GET", _collection_path(resource, namespace), params=params)
        items = body.get("items", []) if isinstance(body, dict) else []
        return list(items)

    def delete(
        self,
        resource: CustomResource,
        namespace: str,
        name: str,
        *,
        propagation_policy: str = "Background",
    ) -> Any:
        """DELETE one object; owned objects go too (``propagationPolicy``).

        Raises:
            KubernetesNotFound: no such object (HTTP 404).
            KubernetesApiError: any other refusal or transport failure.
        """
        body = {"kind": "DeleteOptions", "apiVersion": "v1"}
        body["propagationPolicy"] = propagation_policy
        return self._request("DELETE", _object_path(resource, namespace, name), json=body)

    # -- plumbing --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self._token_file is not None:
            try:
                token = self._token_file.read_text().strip()
            except OSError as exc:
                raise BackendConfigError(
                    f"cannot read the service-account token {self._token_file}: {exc}"
                ) from None
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = self._client.request(
                method, path, json=json, params=params, headers=self._headers()
            )
        except httpx.HTTPError as exc:
            raise KubernetesApiError(
                f"{method} {self.base_url}{path} failed: {exc.__class__.__name__}: {exc}"
            ) from None
        if response.is_success:
            return response.json() if response.content else {}
        raise _error_from(method, path, response)


def _collection_path(resource: CustomResource, namespace: str) -> str:
    return (
        f"/apis/{resource.group}/{resource.version}/namespaces/{quote(namespace, safe='')}"
        f"/{resource.plural}"
    )


def _object_path(resource: CustomResource, namespace: str, name: str) -> str:
    return f"{_collection_path(resource, namespace)}/{quote(name, safe='')}"


_HINTS = {
    401: "the service-account token was refused; is the token mounted and unexpired?",
    403: "the dispatcher's Role lacks this verb on this resource; see the chart's "
    "templates/dispatcher-rbac.yaml",
    404: "the object, namespace or resource type does not exist (is the KubeRay CRD installed?)",
}


def _error_from(method: str, path: str, response: httpx.Response) -> KubernetesApiError:
    """Turn a Kubernetes ``Status`` response into the matching exception."""
    reason, message = "", response.text[:500]
    try:
        status = response.json()
    except ValueError:
        status = None
    if isinstance(status, dict):
        reason = str(status.get("reason", ""))
        message = str(status.get("message", message))
    text = f"{method} {path}: HTTP {response.status_code} {reason}: {message}".rstrip(": ")
    hint = _HINTS.get(response.status_code)
    if response.status_code == 404:
        return KubernetesNotFound(f"{text} ({hint})", response.status_code, reason or "NotFound")
    if response.status_code == 409 and reason in ("AlreadyExists", ""):
        return KubernetesAlreadyExists(text, response.status_code, reason or "AlreadyExists")
    if hint:
        text = f"{text} ({hint})"
    return KubernetesApiError(text, response.status_code, reason)
