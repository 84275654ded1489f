"""One delivery attempt (services/webhooks/transport.py) against real servers on loopback: TLS
verified for the URL's name while the connection goes to the checked address, refused
addresses never connected to, one deadline for the whole exchange, a cap on the answer."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.webhooks import transport
from services.webhooks.destinations import DestinationPolicy

EMBEDDED = DestinationPolicy.parse([], embedded=True)
PRODUCTION = DestinationPolicy.parse([], embedded=False)
Handler = Callable[[BaseHTTPRequestHandler], None]


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Callable[..., tuple[str, list[str]]]]:
    """Starts a server whose POST handler is given; returns (base URL, paths it was sent)."""
    servers: list[ThreadingHTTPServer] = []

    def start(respond: Handler, *, tls: bool = False) -> tuple[str, list[str]]:
        seen: list[str] = []

        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("content-length", 0)))
                seen.append(self.path)
                respond(self)

            def log_message(self, *_: Any) -> None:
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        httpd.daemon_threads = True
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*_self_signed(tmp_path))
            httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        port = httpd.server_address[1]
        return f"{'https' if tls else 'http'}://localhost:{port}", seen

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def _ok(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(204)
    handler.end_headers()


def _post(policy: DestinationPolicy, url: str, **kwargs: Any) -> transport.Attempt:
    return transport.post(policy, url, b"{}", {"webhook-id": "evt_1"},
                          **{"timeout_s": 5.0, "max_response_bytes": 1024, **kwargs})


def test_tls_is_verified_for_the_name_while_the_checked_address_is_connected(
        server: Callable[..., tuple[str, list[str]]], tmp_path: Path) -> None:
    url, seen = server(_ok, tls=True)
    trusted = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
    assert _post(EMBEDDED, f"{url}/hook", ssl_context=trusted).delivered
    untrusted = _post(EMBEDDED, f"{url}/hook")  # the system's CAs do not know it
    assert untrusted.outcome == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(
        untrusted.error)
    assert seen == ["/hook"]


def test_a_refused_address_is_never_connected_to(
        server: Callable[..., tuple[str, list[str]]]) -> None:
    url, seen = server(_ok)
    # localhost resolves to loopback, which a production policy refuses: as a name re-pointed
    # at an internal address after the subscription was made would be.
    https_url = url.replace("http://", "https://")
    attempt = _post(PRODUCTION, f"{https_url}/hook")
    assert (attempt.outcome, attempt.status) == ("refused", None)
    assert "loopback" in str(attempt.error)
    assert seen == []


def test_one_deadline_covers_a_receiver_that_trickles_its_answer(
        server: Callable[..., tuple[str, list[str]]]) -> None:
    def trickle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100")
        handler.end_headers()
        for _ in range(100):  # a byte every 0.1 s: each read is quick, the whole is not
            handler.wfile.write(b"x")
            handler.wfile.flush()
            time.sleep(0.1)

    url, _ = server(trickle)
    started = time.monotonic()
    attempt = _post(EMBEDDED, f"{url}/hook", timeout_s=1.0)
    assert attempt.outcome == "timeout"
    assert time.monotonic() - started < 3


def test_only_the_capped_head_of_a_large_answer_is_read(
        server: Callable[..., tuple[str, list[str]]]) -> None:
    def huge(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(500)
        handler.send_header("Content-Length", str(50 * 1024 * 1024))
        handler.end_headers()
        try:
            for _ in range(50 * 1024):
                handler.wfile.write(b"e" * 1024)
        except OSError:
            pass  # the client stopped reading and closed the connection

    url, _ = server(huge)
    started = time.monotonic()
    attempt = _post(EMBEDDED, f"{url}/hook", max_response_bytes=4096)
    assert attempt.outcome == "http_error" and attempt.status == 500
    assert len(str(attempt.error)) < 400 and time.monotonic() - started < 3
