"""An in-process stand-in for the Kubernetes API server, for the custom-object endpoints only.

A real API server (plus etcd and the KubeRay operator) cannot run on the development and CI
machines, so this small HTTP server on loopback plays its part for the calls the KubeRay backend
makes, with the API server's observable semantics for them:

* ``POST /apis/{group}/{version}/namespaces/{ns}/{plural}`` → 201 with the stored object
  (uid, resourceVersion, creationTimestamp filled in), 409 ``AlreadyExists`` when the name is
  taken, 422 ``Invalid`` when the validator passed to the server refuses the object (the real
  server validates against the CRD's OpenAPI schema);
* ``GET …/{plural}`` (``labelSelector`` with ``k=v`` terms) and ``GET …/{plural}/{name}`` →
  200, or 404 ``NotFound``;
* ``DELETE …/{plural}/{name}`` → 200 ``Status: Success``, or 404 ``NotFound``;
* 401 ``Unauthorized`` when a token is required and the bearer token differs; 404 for resource
  types it was not told about (as for an uninstalled CRD).

What it does NOT do: run controllers. Tests play the KubeRay operator by writing ``status``
with :meth:`FakeKubeApiServer.set_status`. It optionally serves HTTPS with a given certificate,
to exercise the in-cluster CA path of the client.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import ssl
import threading
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

Validator = Callable[[dict[str, Any]], list[str]]


def _status(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


class FakeKubeApiServer:
    """Custom-object endpoints of a Kubernetes API server, on 127.0.0.1.

    Args:
        resources: ``(group, version, plural)`` triples it serves, e.g. ray.io/v1 rayjobs.
        token: bearer token every request must carry; None accepts any request.
        validator: called with each object to create; a non-empty list of messages refuses it.
        ssl_context: serve HTTPS with this server context.
    """

    def __init__(
        self,
        resources: set[tuple[str, str, str]],
        *,
        token: str | None = None,
        validator: Validator | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.resources = resources
        self.token = token
        self.validator = validator
        self.objects: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()
        self._version = 0
        handler = self._handler_class()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if ssl_context is not None else "http"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}"

    def start(self) -> FakeKubeApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # -- playing the operator --------------------------------------------------------------

    def get_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        with self._lock:
            return copy.deepcopy(self.objects.get((group, version, ns, plural, name)))

    def set_status(
        self, group: str, version: str, ns: str, plural: str, name: str, status: dict[str, Any]
    ) -> None:
        """Write an object's status, as its controller would."""
        with self._lock:
            self.objects[(group, version, ns, plural, name)]["status"] = copy.deepcopy(status)

    # -- HTTP ------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
                pass  # keep pytest output clean

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length)) if length else None

            def _dispatch(self, method: str) -> None:
                body = self._body()
                url = urlsplit(self.path)
                server.requests.append((method, url.path, body))
                if server.token is not None and (
                    self.headers.get("Authorization") != f"Bearer {server.token}"
                ):
                    self._send(401, _status(401, "Unauthorized", "Unauthorized"))
                    return
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                # apis/{group}/{version}/namespaces/{ns}/{plural}[/{name}]
                if len(parts) not in (6, 7) or parts[0] != "apis" or parts[3] != "namespaces":
                    self._send(404, _status(404, "NotFound", "the server could not find the "
                                                              "requested resource"))
                    return
                group, version, ns, plural = parts[1], parts[2], parts[4], parts[5]
                if (group, version, plural) not in server.resources:
                    self._send(404, _status(404, "NotFound", "the server could not find the "
                                                              "requested resource"))
                    return
                name = parts[6] if len(parts) == 7 else None
                handler = getattr(server, f"_{method.lower()}_{'one' if name else 'many'}", None)
                if handler is None:
                    self._send(405, _status(405, "MethodNotAllowed", f"{method} not allowed"))
                    return
                try:
                    code, reply = handler(group, version, ns, plural, name, body,
                                          parse_qs(url.query))
                except Exception as exc:  # a bug here must fail the test, not hang it
                    code, reply = 500, _status(500, "InternalError", repr(exc))
                self._send(code, reply)

            def do_GET(self) -> None:
                self._dispatch("GET")

            def do_POST(self) -> None:
                self._dispatch("POST")

            def do_DELETE(self) -> None:
                self._dispatch("DELETE")

        return Handler

    def _post_many(self, group: str, version: str, ns: str, plural: str, _name: Any,
                   body: Any, _query: Any) -> tuple[int, dict[str, Any]]:
        name = (body or {}).get("metadata", {}).get("name")
        if not name:
            return 422, _status(422, "Invalid", f"{plural}.{group} is invalid: metadata.name: "
                                               "Required value")
        meta_ns = body["metadata"].get("namespace", ns)
        if meta_ns != ns:
            return 400, _status(400, "BadRequest", "the namespace of the provided object does "
                                                   "not match the namespace sent on the request")
        if self.validator is not None:
            errors = self.validator(body)
            if errors:
                return 422, _status(422, "Invalid", f"{plural}.{group} \"{name}\" is invalid: "
                                    + "; ".join(errors), name=name, group=group, kind=plural)
        key = (group, version, ns, plural, name)
        with self._lock:
            if key in self.objects:
                return 409, _status(409, "AlreadyExists", f"{plural}.{group} \"{name}\" already "
                                    "exists", name=name, group=group, kind=plural)
            self._version += 1
            stored = copy.deepcopy(body)
            stored["metadata"].update(
                namespace=ns,
                uid=str(uuid.uuid4()),
                resourceVersion=str(self._version),
                generation=1,
                creationTimestamp=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            self.objects[key] = stored
            return 201, copy.deepcopy(stored)

    def _get_one(self, group: str, version: str, ns: str, plural: str, name: str,
                 _body: Any, _query: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            obj = self.objects.get((group, version, ns, plural, name))
            if obj is None:
                return 404, _status(404, "NotFound", f"{plural}.{group} \"{name}\" not found",
                                    name=name, group=group, kind=plural)
            return 200, copy.deepcopy(obj)

    def _get_many(self, group: str, version: str, ns: str, plural: str, _name: Any,
                  _body: Any, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        wanted = {}
        for term in ",".join(query.get("labelSelector", [])).split(","):
            if term:
                key, _, value = term.partition("=")
                wanted[key] = value
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (g, v, n, p, _), obj in sorted(self.objects.items())
                if (g, v, n, p) == (group, version, ns, plural)
                and all((obj["metadata"].get("labels") or {}).get(k) == val
                        for k, val in wanted.items())
            ]
        return 200, {"kind": "List", "apiVersion": f"{group}/{version}", "metadata": {},
                     "items": items}

    def _delete_one(self, group: str, version: str, ns: str, plural: str, name: str,
                    _body: Any, _query: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if self.objects.pop((group, version, ns, plural, name), None) is None:
                return 404, _status(404, "NotFound", f"{plural}.{group} \"{name}\" not found",
                                    name=name, group=group, kind=plural)
        return 200, _status(200, "", "", name=name, group=group, kind=plural)
