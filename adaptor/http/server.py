"""``nhs111 serve`` and ``nhs111 worker``: logging, the long-lived components (built and closed by
:mod:`adaptor.composition`), the HTTP(S) server around them, and the outbox worker threads beside it (or, for
``nhs111 worker``, on their own).

The server is cheroot (CherryPy's WSGI server): a thread pool of ``PEM111_SERVER_THREADS`` request threads
behind one selector thread that accepts connections and watches idle keep-alive ones. It serves plain HTTP, or
with ``PEM111_TLS_CERT`` HTTPS only, optionally with client certificates (mutual TLS, see :mod:`adaptor.http.tls`).
waitress, which served before, has no TLS, and its event loop cannot run a TLS handshake without blocking
every other connection; gunicorn would have meant pre-forked processes, each with its own store connections,
allow-list refresh and outbox threads.

TLS handshakes never occupy a request thread while they wait for the client: :class:`_TlsConnection` advances a
handshake only as far as the bytes received allow and hands the connection back to the selector in between, so
a client that connects and stays silent, or never presents a certificate, costs a socket, not a thread. Only a
client whose certificate passed verification gets as far as sending a request.
"""

from __future__ import annotations

import contextlib
import io
import logging
import select
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

from cheroot import server as cheroot_server
from cheroot import wsgi as cheroot_wsgi
from cheroot.makefile import MakeFile
from cheroot.ssl import Adapter

from adaptor import composition
from adaptor.config import ConfigError, Settings
from adaptor.http.app import build_app
from adaptor.http.tls import REFUSAL_TEXT, ServerTls, check_combination, format_subject
from adaptor.itk.schemas import warm_up
from adaptor.ops.logs import QueryStringRedactor as QueryStringRedactor  # re-exported: tests import it from here
from adaptor.ops.logs import configure_logging

log = logging.getLogger("adaptor.server")
tls_log = logging.getLogger("adaptor.tls")
#: cheroot's own messages (it writes them to stderr unless told otherwise: :meth:`_Server.error_log`).
cheroot_log = logging.getLogger("cheroot")

#: The server refuses (HTTP 413) bodies beyond this multiple of the configured maximum without passing them on;
#: between the two limits the endpoint answers with the ITK fault for rule A1, which senders understand.
SERVER_BODY_LIMIT_FACTOR = 2
#: Request line and headers together (waitress's default, which served before).
MAX_REQUEST_HEADER_BYTES = 256 * 1024
#: Connections the kernel queues before the selector thread accepts them.
LISTEN_BACKLOG = 1024
#: A connection's allowance, in seconds: to complete the TLS handshake, to make progress with each read of a
#: request once it has started, and to send its next request on a kept-alive connection.
CONNECTION_TIMEOUT_SECONDS = 30
#: On SIGTERM, requests in progress get this long to finish before their connections are closed.
SHUTDOWN_GRACE_SECONDS = 20

#: Request headers a proxy would set; with no proxy trusted they are dropped before the application, so that
#: nothing can take a client's word for its address or scheme (waitress's ``clear_untrusted_proxy_headers``).
UNTRUSTED_PROXY_HEADERS = (
    "HTTP_FORWARDED",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_BY",
)
#: The WSGI environ key saying whether the connection's client certificate subject is allowed (TLS only).
CLIENT_ALLOWED = "nhs111.tls_client_allowed"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@contextlib.contextmanager
def _exit_on_config_error() -> Iterator[None]:
    """A :class:`ConfigError` (a TLS setting, the forward target) ends the command with one line naming the
    problem and exit status 2, as every CLI error."""
    try:
        yield
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


def _server_tls(settings: Settings) -> ServerTls | None:
    if not settings.tls_enabled:
        check_combination(settings)  # refuses client-certificate settings without a server certificate
        return None
    return ServerTls(settings)


# -- the HTTP server ---------------------------------------------------------------------------------------------


class _Server(cheroot_wsgi.Server):
    """cheroot's WSGI server, its messages sent to the ``cheroot`` logger, and the TLS settings in reach of the
    connections (:attr:`tls`)."""

    tls: ServerTls | None = None

    def error_log(self, msg: str = "", level: int = logging.INFO, traceback: bool = False) -> None:
        # With ``traceback`` cheroot is inside an ``except``; the text of what it caught (a repr of the exception)
        # could quote a request, so above DEBUG only the exception's type is logged (see adaptor.ops.logs).
        error = sys.exc_info()[1] if traceback else None
        if error is not None:
            cheroot_log.log(level, "HTTP server error", extra={"error": type(error).__name__})
            cheroot_log.debug("HTTP server error: %s", msg, exc_info=True)
        else:
            cheroot_log.log(level, "%s", msg)


class _Gateway(cheroot_wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, honouring an application's ``Connection: close``.

    cheroot decides by itself whether to keep a connection open, and before answering on a kept-alive one it
    reads the rest of the request body. After a body that timed out (a 408 from :mod:`adaptor.http.app`) that
    read would wait out the timeout again and lose the answer: ``Connection: close`` from the application
    closes the connection after the answer instead.
    """

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        write = super().start_response(status, headers, exc_info)
        if any(name.lower() == "connection" and value.lower() == "close" for name, value in headers):
            self.req.close_connection = True
        return write


class _TlsAdapter(Adapter):
    """Wraps each accepted socket for TLS without the handshake, which :class:`_TlsConnection` does later in a
    request thread; cheroot's own adapter does it right away in the selector thread, where a client that stays
    silent would stall every other connection until its timeout."""

    def __init__(self, tls: ServerTls) -> None:
        super().__init__(tls.settings.tls_cert, tls.settings.tls_key)
        self.tls = tls

    def bind(self, sock: socket.socket) -> socket.socket:
        return sock

    def wrap(self, sock: socket.socket) -> tuple[ssl.SSLSocket, dict[str, Any]]:
        # The current context: a reload (new CRL, renewed certificate) applies from the next connection on.
        wrapped = self.tls.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, {}

    def get_environ(self) -> dict[str, Any]:
        return {}  # per connection, set by _TlsConnection once the handshake is done

    def makefile(self, sock: socket.socket, mode: str = "r", bufsize: int = io.DEFAULT_BUFFER_SIZE) -> Any:
        return MakeFile(sock, mode, bufsize)


class _TlsConnection(cheroot_server.HTTPConnection):
    """An HTTPS connection: the handshake first, a step at a time, then HTTP as cheroot does it.

    cheroot calls :meth:`communicate` in a request thread when the connection is new or has bytes to read, and
    returns it to the selector when the call answers true. During the handshake the socket is non-blocking: each
    call advances the handshake as far as the bytes received allow, and answers true to wait for more. The
    selector closes a connection that stays silent for the server's timeout; one that trickles bytes is closed
    when its handshake has taken longer than that.
    """

    handshake_done = False
    handshake_started = 0.0
    client_allowed = True

    def communicate(self) -> bool:
        if not self.handshake_done:
            finished = self._handshake_step()
            if finished is not True:
                return finished is None  # None: waiting for the client; False: refused or failed
            # Not back to the selector: OpenSSL may already hold the first request, which select() cannot see.
        keep_open = bool(super().communicate())
        return keep_open and self.client_allowed

    def _handshake_step(self) -> bool | None:
        """True once the handshake is done, None while it waits for the client, False when it failed."""
        sock: ssl.SSLSocket = self.socket
        timeout = float(self.server.timeout)
        now = time.monotonic()
        if not self.handshake_started:
            self.handshake_started = now
        elif now - self.handshake_started > timeout:
            self._failed("handshake not completed in time")
            return False
        try:
            sock.setblocking(False)
            while True:
                try:
                    sock.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    return None
                except ssl.SSLWantWriteError:
                    # Rare: the server's handshake messages fill the socket's send buffer. Wait here, briefly.
                    if not select.select([], [sock], [], timeout)[1]:
                        raise TimeoutError("the client does not read") from None
        except ssl.SSLCertVerificationError as exc:
            self._refused(f"client certificate refused: {exc.verify_message}")
            self._discard_unread()
            return False
        except ssl.SSLError as exc:
            self._handshake_failed(exc)
            self._discard_unread()
            return False
        except OSError as exc:  # the client went away, or never read
            self._failed(f"connection lost: {exc.strerror or exc}", level=logging.DEBUG)
            return False
        sock.settimeout(timeout)
        self.handshake_done = True
        self._note_client(sock)
        return True

    def _handshake_failed(self, exc: ssl.SSLError) -> None:
        reason = str(exc.reason or exc)
        if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
            self._refused("no client certificate")
        elif reason == "HTTP_REQUEST":
            self._failed("plain HTTP request on the TLS port")
            self._answer_plain_http()
        elif isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError):
            self._failed("connection closed", level=logging.DEBUG)  # port probes, TCP health checks
        else:
            # E.g. "tlsv1 alert unknown ca": the client refused the server's certificate; "unsupported protocol".
            self._failed(reason.replace("_", " ").lower())

    def _answer_plain_http(self) -> None:
        body = b"This port speaks HTTPS only.\n"
        head = f"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        self._discard_unread()
        with contextlib.suppress(OSError):
            # Straight onto the TCP connection, past the TLS layer: the client is not speaking TLS.
            socket.socket.sendall(self.socket, (head + "Connection: close\r\n\r\n").encode("ascii") + body)

    def _discard_unread(self) -> None:
        """Read what the client has sent and nobody will read: closing a connection with unread bytes resets it,
        and a reset can overtake the TLS alert (or the answer) on its way, leaving the client without a reason."""
        with contextlib.suppress(OSError):
            for _ in range(16):  # at most 1 MiB, then the reset is the client's own doing
                if not socket.socket.recv(self.socket, 65536, socket.MSG_DONTWAIT):
                    return

    def _note_client(self, sock: ssl.SSLSocket) -> None:
        tls: ServerTls = self.server.tls
        peercert = sock.getpeercert() or {}
        subject = format_subject(peercert) if peercert else ""
        self.client_allowed = tls.subjects.allows(peercert)
        cipher = sock.cipher()
        self.ssl_env = {
            "wsgi.url_scheme": "https",
            "HTTPS": "on",
            "SSL_PROTOCOL": sock.version() or "",
            "SSL_CIPHER": cipher[0] if cipher else "",
            "SSL_CLIENT_VERIFY": "SUCCESS" if peercert else "NONE",
            "SSL_CLIENT_S_DN": subject,
            CLIENT_ALLOWED: self.client_allowed,
        }
        if not self.client_allowed:
            tls_log.warning(
                "TLS client refused: subject not allowed",
                extra={"client": self._peer(), "subject": subject, "setting": "PEM111_TLS_CLIENT_SUBJECTS"},
            )
        else:
            tls_log.debug("TLS client accepted", extra={"client": self._peer(), "subject": subject})

    def _refused(self, reason: str) -> None:
        """The server refused the client: mutual authentication failed."""
        tls_log.warning("TLS handshake refused", extra={"client": self._peer(), "reason": reason})

    def _failed(self, reason: str, level: int = logging.INFO) -> None:
        """The handshake failed for another reason (the client's side, the protocol, the network)."""
        tls_log.log(level, "TLS handshake failed", extra={"client": self._peer(), "reason": reason})

    def _peer(self) -> str:
        return f"{self.remote_addr}:{self.remote_port}"


def _edge(app: WsgiApp) -> WsgiApp:
    """What every request passes before the application: untrusted proxy headers dropped, and under mutual TLS
    a client whose certificate subject is not allowed answered 403 with the reference's text."""

    def edge(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        for name in UNTRUSTED_PROXY_HEADERS:
            environ.pop(name, None)
        if environ.get(CLIENT_ALLOWED) is False:
            # The connection closes after this answer (_TlsConnection), and the header says so.
            body = (REFUSAL_TEXT + "\n").encode("ascii")
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
            start_response("403 Forbidden", [*headers, ("Connection", "close")])
            return [body]
        return app(environ, start_response)

    return edge


def _http_server(settings: Settings, app: WsgiApp, tls: ServerTls | None) -> _Server:
    server = _Server(
        (settings.host, settings.port),
        _edge(app),
        numthreads=settings.server_threads,
        max=settings.server_threads,
        server_name="nhs111",  # the Server header (and SERVER_NAME for requests without a Host header)
        request_queue_size=LISTEN_BACKLOG,
        timeout=CONNECTION_TIMEOUT_SECONDS,
        shutdown_timeout=SHUTDOWN_GRACE_SECONDS,
    )
    server.gateway = _Gateway
    server.max_request_body_size = settings.max_request_bytes * SERVER_BODY_LIMIT_FACTOR
    server.max_request_header_size = MAX_REQUEST_HEADER_BYTES
    if tls is not None:
        server.tls = tls
        server.ssl_adapter = _TlsAdapter(tls)
        server.ConnectionClass = _TlsConnection
    return server


# -- nhs111 serve ------------------------------------------------------------------------------------------------


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, finish the requests and deliveries in flight and close.

    ``PEM111_DELIVERY_WORKERS`` outbox threads deliver beside the server (none: a separate ``nhs111 worker``
    delivers); they start only once the server listens. Under TLS, SIGHUP reloads the certificates and the CRL,
    and so does a change to their files, noticed within ``PEM111_TLS_RELOAD_SECONDS``.
    """
    configure_logging(settings)
    with _exit_on_config_error():
        tls = _server_tls(settings)  # first: a bad TLS setting stops start-up before anything is opened
        components = composition.build(settings)
    if not components.allow_list.configured:
        log.warning(
            "no addressing allow-list is configured: every address is accepted; in production set "
            "PEM111_ITK_ODS_CODE_LIST, PEM111_ITK_DOS_ID_LIST or PEM111_ITK_EXTERNAL_CONFIGURATION_URL"
        )
    # Before the first request: libxml2 fails when request threads compile the same schema at once, which a
    # burst of requests right after a (re)start would otherwise make them do.
    warm_up(settings)
    app = build_app(components)

    server = _http_server(settings, app, tls)
    try:
        server.prepare()  # binds and listens, and starts the request threads
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        components.close()
        raise SystemExit(2) from None

    stopping = threading.Event()
    reload_requested = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    def request_reload(_signum: int, _frame: FrameType | None) -> None:
        reload_requested.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if tls is not None:
        signal.signal(signal.SIGHUP, request_reload)

    host, port = server.bind_addr[:2]
    url_host = f"[{host}]" if ":" in str(host) else host
    log.info(
        "listening on %s://%s:%s%s (message store %s, delivery to %s, %s mode, %d delivery thread(s))",
        "https" if tls is not None else "http",
        url_host,
        port,
        settings.report_paths[0],
        components.store.url,
        components.forwarder.target,
        settings.delivery_mode,
        components.worker.thread_count,
    )
    if tls is not None:
        log.info("TLS: %s", tls.describe())
        if not tls.client_certificates_required:
            log.warning("TLS without client certificates: set PEM111_TLS_CLIENT_CA to authenticate senders")
    components.start_delivery()
    serving = threading.Thread(target=server.serve, name="http-server")
    serving.start()
    try:
        # The main thread only waits: signal handlers run here, between timed waits.
        next_check = time.monotonic() + settings.tls_reload_seconds
        while not stopping.wait(1.0):
            if not serving.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                raise SystemExit(1)
            if tls is not None and reload_requested.is_set():
                reload_requested.clear()
                tls.reload("SIGHUP")
            if tls is not None and settings.tls_reload_seconds and time.monotonic() >= next_check:
                next_check = time.monotonic() + settings.tls_reload_seconds
                tls.reload_if_changed()
    finally:
        server.stop()  # stops accepting; requests in progress get SHUTDOWN_GRACE_SECONDS
        serving.join()
        components.close()  # the outbox threads first (deliveries in flight finish), the store last
        log.info("stopped")


def run_worker(settings: Settings) -> None:
    """``nhs111 worker``: deliver from the outbox until SIGTERM or SIGINT, then finish the deliveries in flight.

    Runs ``PEM111_DELIVERY_WORKERS`` threads (at least one), against the same store as the servers; several
    workers (and servers' own threads) may share one store: each message is claimed by one of them at a time.
    """
    configure_logging(settings)
    with _exit_on_config_error():
        components = composition.build_delivery(settings)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "delivering from message store %s to %s with %d thread(s)",
        components.store.url,
        components.forwarder.target,
        components.worker.thread_count,
    )
    components.start_delivery()
    try:
        while not stopping.wait(1.0):  # a timed wait: signal handlers run in the main thread between waits
            pass
    finally:
        components.close()  # the outbox threads first (deliveries in flight finish), the store last
        log.info("stopped")
