"""A real HTTP(S) server standing in for a FHIR endpoint, and a throw-away PKI for its TLS tests.

    with FhirServer() as server:                  # http://127.0.0.1:<free port>
        server.reply(201, b"{...}", {"Content-Type": "application/fhir+json"})
        ...POST to server.url...
        server.requests[0].body

    pki = make_pki(tmp_path)                      # CA, server and client certificates (openssl CLI)
    with FhirServer(tls=server_tls(pki, require_client_cert=True)) as server: ...

The server speaks HTTP/1.1 with keep-alive (so connection reuse can be observed through
:attr:`Recorded.client_port`), handles each connection in its own thread, and records every request it reads.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

from tls_certs import openssl_command


@dataclass(frozen=True)
class Recorded:
    """One request as the server read it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    client_port: int
    client_cert_subject: str = ""  # the client certificate's CN under mutual TLS


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_seconds: float = 0.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real FHIR server
    server: _Server
    timeout = 10.0  # an idle kept-alive connection is closed after this (see FhirServer's idle_timeout)

    def do_POST(self) -> None:  # noqa: N802 - the name http.server dispatches to
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        subject = ""
        if isinstance(self.connection, ssl.SSLSocket):
            cert = self.connection.getpeercert() or {}
            names = [pair for rdn in cert.get("subject", ()) for pair in rdn]
            subject = next((str(pair[1]) for pair in names if pair[0] == "commonName"), "")
        self.server.record(
            Recorded(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                client_port=self.client_address[1],
                client_cert_subject=subject,
            )
        )
        reply = self.server.current_reply
        if reply.delay_seconds and self.server.stopping.wait(reply.delay_seconds):
            return  # shutting down: drop the connection unanswered
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's signature
        """Quiet: pytest shows failures; access lines would only be noise."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None, idle_timeout: float) -> None:
        handler = type("_TimedHandler", (_Handler,), {"timeout": idle_timeout})
        super().__init__(("127.0.0.1", 0), handler)
        self.tls = tls
        self.current_reply = Reply()
        self.requests: list[Recorded] = []
        self.tls_failures: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def finish_request(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        # The TLS handshake happens here, in the connection's own thread, so a client that never completes it
        # cannot stall the accept loop.
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                with self._lock:
                    self.tls_failures.append(f"{type(exc).__name__}: {exc}")
                request.close()
                return
        super().finish_request(request, client_address)

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-request (e.g. after its read timeout) is expected in these tests."""


class FhirServer:
    """A started :class:`_Server` on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(self, tls: ssl.SSLContext | None = None, path: str = "/fhir/Bundle", idle_timeout: float = 10) -> None:
        self._server = _Server(tls, idle_timeout)
        # A short poll interval: shutdown() waits for the loop to notice, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fhir-test-server", daemon=True
        )
        scheme = "https" if tls is not None else "http"
        self.port = self._server.server_address[1]
        self.url = f"{scheme}://127.0.0.1:{self.port}{path}"

    @property
    def requests(self) -> list[Recorded]:
        return list(self._server.requests)

    @property
    def tls_failures(self) -> list[str]:
        return list(self._server.tls_failures)

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, delay: float = 0) -> None:
        """Answer every following request with this."""
        self._server.current_reply = Reply(status, body, dict(headers or {}), delay)

    def __enter__(self) -> FhirServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def free_port() -> int:
    """A port nothing listens on (bound and released; nothing else in the test run takes it that fast)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- a throw-away PKI ---------------------------------------------------------------------------------------------

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[wrong_host]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong-host.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass(frozen=True)
class Pki:
    """PEM files: a test CA, certificates it issued, and a second CA nobody trusts."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    wrong_host_cert: Path  # issued by the CA for another host name
    wrong_host_key: Path
    client_cert: Path  # CN=nhs111-adaptor-test-client
    client_key: Path
    untrusted_ca_cert: Path
    untrusted_server_cert: Path  # for 127.0.0.1, issued by the untrusted CA
    untrusted_server_key: Path


def make_pki(folder: Path) -> Pki:
    """Create the :class:`Pki` in ``folder`` with the ``openssl`` CLI (P-256 keys, valid for two days)."""
    openssl = openssl_command()
    config = folder / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)
    serial = iter(range(1000, 2000))

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=folder)

    def new_key_request(name: str, cn: str) -> None:
        run("req", "-new", "-config", str(config), "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")  # fmt: skip

    def new_ca(name: str, cn: str) -> None:
        run("req", "-x509", "-config", str(config), "-extensions", "ca", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
            "-days", "2", "-subj", f"/CN={cn}")  # fmt: skip

    def issue(name: str, cn: str, ca: str, extensions: str) -> None:
        new_key_request(name, cn)
        run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-set_serial", str(next(serial)), "-days", "2", "-extfile", str(config), "-extensions", extensions,
            "-out", f"{name}.pem")  # fmt: skip

    new_ca("ca", "nhs111-adaptor test CA")
    issue("server", "127.0.0.1", "ca", "server")
    issue("wrong_host", "wrong-host.example", "ca", "wrong_host")
    issue("client", "nhs111-adaptor-test-client", "ca", "client")
    new_ca("untrusted_ca", "untrusted test CA")
    issue("untrusted_server", "127.0.0.1", "untrusted_ca", "server")
    return Pki(
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        wrong_host_cert=folder / "wrong_host.pem",
        wrong_host_key=folder / "wrong_host.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        untrusted_ca_cert=folder / "untrusted_ca.pem",
        untrusted_server_cert=folder / "untrusted_server.pem",
        untrusted_server_key=folder / "untrusted_server.key",
    )


def server_tls(
    cert: Path, key: Path, *, client_ca: Path | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A server-side TLS context; with ``require_client_cert`` clients must present a cert ``client_ca`` issued."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if require_client_cert:
        assert client_ca is not None, "mutual TLS needs the CA that issues client certificates"
        context.load_verify_locations(cafile=client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
