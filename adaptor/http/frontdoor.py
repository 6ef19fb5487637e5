"""The front door of ``nhs111 serve``: connections, TLS, HTTP/1.1 framing and request bodies, on one event loop;
the application on a pool of worker threads.

The server is Tornado's HTTP/1.1 implementation (:class:`tornado.tcpserver.TCPServer` and
:class:`tornado.http1connection.HTTP1ServerConnection`) driven by the asyncio event loop of one thread. Everything
that waits for a client happens there and costs a socket and a few kilobytes, never a thread: accepting, the TLS
handshake and the check of the client certificate's subject, reading the request line and headers, and reading
the whole body into memory. Only a complete request, within its limits, is handed to one of
``PEM111_SERVER_THREADS`` worker threads, which runs the WSGI application and returns the whole answer; the event
loop writes it. So no number of idle, slow or trickling clients can keep a worker from a good request.

The limits (:class:`Limits`), each with the answer a client gets when it crosses one:

* connections in total and from one client address (``PEM111_SERVER_MAX_CONNECTIONS``,
  ``PEM111_SERVER_MAX_CONNECTIONS_PER_CLIENT``): closed at once, before any byte is read;
* the TLS handshake, the request line and headers (and a kept-alive connection's wait for its next request)
  within ``PEM111_SERVER_HEADER_TIMEOUT_SECONDS``: closed; the whole body within
  ``PEM111_SERVER_BODY_TIMEOUT_SECONDS``: 408 and closed;
* request line and headers over :data:`MAX_HEADER_BYTES`, conflicting ``Content-Length`` headers,
  ``Content-Length`` with ``Transfer-Encoding``, a transfer coding other than ``chunked``, a malformed chunk, an
  HTTP/1.1 request without exactly one ``Host``: 400 and closed (Tornado's framing is strict by design: lenient
  framing is what request smuggling exploits);
* a body over ``PEM111_MAX_REQUEST_BYTES``: on a report path it is read to its end (discarded, never held) and
  answered with the ITK fault for rule A1, which senders understand, as long as it stays within twice the maximum;
  beyond that, or on any other path, 413 and closed without reading it;
* bodies held in memory at once, all connections together (:attr:`Limits.body_budget_bytes`, admitted under the
  banker's rule of :class:`~adaptor.http.budgets.BodyBudget`): beyond it the event loop stops reading bodies
  until a request is answered; and the estimated cost of the requests at work (:attr:`Limits.work_budget_bytes`,
  :meth:`FrontDoor.answer`): a complete request waits for its share before a worker takes it. So memory stays
  bounded however many large requests arrive together (the README gives the arithmetic).

Why Tornado (the README says the same): it is a small, long-maintained, dependency-free server library whose
HTTP/1.1 parser refuses every ambiguous framing, whose connections are driven by an event loop (asyncio), whose
TLS handshakes are non-blocking, and which hands a request to the application only through a delegate interface
that lets the body be read, bounded and buffered before any thread is involved. cheroot, which served before,
hands a connection to a thread that then reads the request itself; waitress has no TLS; uvicorn and hypercorn are
ASGI servers, with WSGI only through an adapter, and no place for the certificate subject check before HTTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import socket
import ssl
import urllib.parse
from collections.abc import Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters, HTTP1ServerConnection
from tornado.ioloop import IOLoop
from tornado.tcpserver import TCPServer

from adaptor.config import Settings
from adaptor.http.budgets import BodyAccount, BodyBudget, WorkBudget
from adaptor.http.gateway import Answer, WsgiApp, call_application, request_environ
from adaptor.http.tls import REFUSAL_TEXT, ServerTls, format_subject, log_handshake_failure
from adaptor.itk import faults
from adaptor.itk.payloads import max_decoded_bytes

log = logging.getLogger("adaptor.server")
tls_log = logging.getLogger("adaptor.tls")

#: Request line and headers together; a 111 request's are a few hundred bytes.
MAX_HEADER_BYTES = 16 * 1024
#: What one read from a socket takes at most, and so what one connection's buffer holds beyond its headers.
READ_CHUNK_BYTES = 16 * 1024
#: The body is read to its end and answered with fault A1 up to this multiple of ``PEM111_MAX_REQUEST_BYTES``;
#: beyond it the answer is 413 without reading further.
SERVER_BODY_LIMIT_FACTOR = 2
#: Bodies held in memory at once, as a multiple of ``PEM111_MAX_REQUEST_BYTES``.
BODY_BUDGET_FACTOR = 3
#: The work budget, as a multiple of ``PEM111_MAX_REQUEST_BYTES``, and a request's estimated cost: a fixed part,
#: a multiple of its body and a multiple of what its payloads can decode to (adaptor.itk.payloads). Measured
#: (docs/benchmarks.md): a 4.9 MB body of one narrative took 32 MB to accept; two gzip payloads decoding to
#: 15.8 MiB from a 0.5 MB body took 25 MB.
WORK_BUDGET_FACTOR = 14
WORK_COST_FIXED = 256 * 1024
WORK_COST_PER_BODY_BYTE = 8
WORK_COST_PER_DECODED_BYTE = 2
#: After a refusal sent while the client is still sending, what is read and dropped (and for how long) before
#: closing: closing with unread bytes resets the connection, and a reset can overtake the answer.
LINGER_BYTES = 1024 * 1024
LINGER_SECONDS = 2.0

#: The WSGI environ key saying whether the connection's client certificate subject is allowed (TLS only).
CLIENT_ALLOWED = "nhs111.tls_client_allowed"
TOO_LARGE_TEXT = "The request body is too large"
_TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class Limits:
    """What one connection and all of them together may hold and take (see the module's docstring)."""

    max_request_bytes: int
    max_connections: int
    max_connections_per_client: int
    header_timeout: float
    body_timeout: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_request_bytes=settings.max_request_bytes,
            max_connections=settings.server_max_connections,
            max_connections_per_client=settings.server_max_connections_per_client,
            header_timeout=settings.server_header_timeout_seconds,
            body_timeout=settings.server_body_timeout_seconds,
        )

    @property
    def refused_unread_bytes(self) -> int:
        """Bodies longer than this are refused (413) without being read."""
        return self.max_request_bytes * SERVER_BODY_LIMIT_FACTOR

    @property
    def body_budget_bytes(self) -> int:
        return self.max_request_bytes * BODY_BUDGET_FACTOR

    @property
    def body_budget_per_client_bytes(self) -> int:
        """What the bodies from one client address may hold of :attr:`body_budget_bytes`: two maximal requests,
        so that clients elsewhere always have room for one."""
        return self.max_request_bytes * (BODY_BUDGET_FACTOR - 1)

    @property
    def work_budget_bytes(self) -> int:
        return self.max_request_bytes * WORK_BUDGET_FACTOR

    @property
    def connection_buffer_bytes(self) -> int:
        """What one connection's read buffer holds at most: its headers and one read beyond them."""
        return MAX_HEADER_BYTES + 2 * READ_CHUNK_BYTES


class _Client:
    """One connection's facts, for the requests on it and for Tornado's log lines (``str``)."""

    def __init__(self, address: tuple[Any, ...], scheme: str) -> None:
        self.address = address
        self.remote_ip = str(address[0])  # Tornado's name
        self.protocol = scheme  # Tornado's name
        self.ssl_environ: dict[str, Any] = {}
        self.allowed = True

    def __str__(self) -> str:
        return f"{self.remote_ip}:{self.address[1]}"


class FrontDoor(TCPServer, httputil.HTTPServerConnectionDelegate):
    """Tornado's HTTP/1.1 connections, with the limits, TLS and worker threads of this module's docstring.

    Runs on one event loop (:meth:`add_sockets` there); :meth:`shut_down` is a coroutine on the same loop.
    """

    def __init__(
        self, app: WsgiApp, limits: Limits, *, report_paths: Iterable[str], tls: ServerTls | None, threads: int
    ) -> None:
        super().__init__(max_buffer_size=limits.connection_buffer_bytes, read_chunk_size=READ_CHUNK_BYTES)
        self.app = app
        self.limits = limits
        self.report_paths = frozenset(report_paths)
        self.tls = tls
        self.workers = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="request")
        self.params = HTTP1ConnectionParameters(
            max_header_size=MAX_HEADER_BYTES,
            header_timeout=limits.header_timeout,
            # _Request's own checks come first; Tornado's is a backstop, past which it answers 400.
            max_body_size=2 * limits.refused_unread_bytes,
            body_timeout=None,  # _Request's own, which answers 408 rather than closing in silence
            chunk_size=READ_CHUNK_BYTES,
        )
        self.bodies = BodyBudget(limits.body_budget_bytes, per_owner=limits.body_budget_per_client_bytes)
        self.work = WorkBudget(limits.work_budget_bytes)
        self.connections: collections.Counter[str] = collections.Counter()
        #: The address listened on (the first socket's), for requests without a usable Host header.
        self.local_address: tuple[str, int] = ("", 0)
        self._serving: dict[object, _Client] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # answers being prepared (a task needs a reference)
        self.requests_in_progress = 0

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        sockets = list(sockets)
        name = sockets[0].getsockname()
        self.local_address = (str(name[0]), int(name[1]))
        super().add_sockets(sockets)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections ---------------------------------------------------------------------------------------------

    async def handle_stream(self, stream: iostream.IOStream, address: tuple[Any, ...]) -> None:
        client = _Client(address, "https" if self.tls is not None else "http")
        if not self._admit(client):
            stream.close()
            return
        serving = False
        try:
            serving = await self._open(stream, client)
        finally:
            if not serving:  # else on_close releases it when the connection ends
                self._release(client)

    async def _open(self, stream: iostream.IOStream, client: _Client) -> bool:
        """Start serving HTTP on a new connection; False when it was closed instead."""
        try:
            first = await asyncio.wait_for(_peek(stream.socket), self.limits.header_timeout)
        except (TimeoutError, OSError):
            first = b""
        if not first:  # silent until the timeout, or closed
            stream.close()
            return False
        if self.tls is None and not first[:1].isalpha() and first[:1] not in b"\r\n":
            # Not a request line (a TLS ClientHello, say): answered at once, not after the header timeout.
            log.info("request refused", extra={"client": str(client), "status": 400, "reason": "not HTTP"})
            await _answer_and_close(stream, 400, "Bad Request", "This port speaks plain HTTP.")
            return False
        if self.tls is not None:
            try:
                tls_stream = await self._handshake(stream, client, first)
            finally:
                if stream.socket is not None and not stream.closed():  # the handshake never started
                    stream.close()
            if tls_stream is None:
                return False
            stream = tls_stream
        connection = HTTP1ServerConnection(stream, self.params, client)
        self._serving[connection] = client
        connection.start_serving(self)
        return True

    def on_close(self, server_conn: object) -> None:
        client = self._serving.pop(server_conn, None)
        if client is not None:
            self._release(client)

    def _admit(self, client: _Client) -> bool:
        if self.connections.total() >= self.limits.max_connections:
            setting = "PEM111_SERVER_MAX_CONNECTIONS"
        elif self.connections[client.remote_ip] >= self.limits.max_connections_per_client:
            setting = "PEM111_SERVER_MAX_CONNECTIONS_PER_CLIENT"
        else:
            self.connections[client.remote_ip] += 1
            return True
        log.warning("connection refused: too many connections", extra={"client": client.remote_ip, "setting": setting})
        return False

    def _release(self, client: _Client) -> None:
        self.connections[client.remote_ip] -= 1
        if self.connections[client.remote_ip] <= 0:
            del self.connections[client.remote_ip]

    # -- TLS -----------------------------------------------------------------------------------------------------

    async def _handshake(
        self, stream: iostream.IOStream, client: _Client, first: bytes
    ) -> iostream.SSLIOStream | None:
        """The TLS handshake and the subject check, on the event loop; the TLS stream, or None when refused.
        ``first``: the first bytes the client sent, still unread."""
        assert self.tls is not None
        if first[:1].isalpha():  # a request line: plain HTTP on the TLS port
            log_handshake_failure(str(client), "plain HTTP request on the TLS port")
            await _answer_and_close(stream, 400, "Bad Request", "This port speaks HTTPS only.")
            return None
        try:
            # The current context: a reload (new CRL, renewed certificate) applies from the next connection on.
            handshake = stream.start_tls(server_side=True, ssl_options=self.tls.context)
            tls_stream: iostream.SSLIOStream = await asyncio.wait_for(handshake, self.limits.header_timeout)
        except TimeoutError:
            log_handshake_failure(str(client), "handshake not completed in time")
            return None
        except (iostream.StreamClosedError, OSError) as exc:  # ssl.SSLError is an OSError
            log_handshake_failure(str(client), getattr(exc, "real_error", None) or exc)
            return None
        sock = tls_stream.socket
        assert isinstance(sock, ssl.SSLSocket)
        peercert = sock.getpeercert() or {}
        subject = format_subject(peercert) if peercert else ""
        client.allowed = self.tls.subjects.allows(peercert)
        cipher = sock.cipher()
        client.ssl_environ = {
            "HTTPS": "on",
            "SSL_PROTOCOL": sock.version() or "",
            "SSL_CIPHER": cipher[0] if cipher else "",
            "SSL_CLIENT_VERIFY": "SUCCESS" if peercert else "NONE",
            "SSL_CLIENT_S_DN": subject,
            CLIENT_ALLOWED: client.allowed,
        }
        if not client.allowed:
            tls_log.warning(
                "TLS client refused: subject not allowed",
                extra={"client": str(client), "subject": subject, "setting": "PEM111_TLS_CLIENT_SUBJECTS"},
            )
        else:
            tls_log.debug("TLS client accepted", extra={"client": str(client), "subject": subject})
        return tls_stream

    # -- requests ------------------------------------------------------------------------------------------------

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection) -> _Request:
        assert isinstance(request_conn, HTTP1Connection)
        return _Request(self, self._serving[server_conn], request_conn)

    async def answer(self, environ: dict[str, Any], body_bytes: int) -> Answer:
        """The application's answer to a complete request, from a worker thread, once its cost fits the work
        budget."""
        cost = await self.work.take(
            WORK_COST_FIXED
            + WORK_COST_PER_BODY_BYTE * body_bytes
            + WORK_COST_PER_DECODED_BYTE * max_decoded_bytes(body_bytes)
        )
        self.requests_in_progress += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.workers, call_application, self.app, environ)
        finally:
            self.requests_in_progress -= 1
            self.work.give(cost)

    async def shut_down(self, grace_seconds: float) -> None:
        """Stop accepting, give requests in progress ``grace_seconds`` to be answered, then close every
        connection and stop the worker threads."""
        self.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        while self.requests_in_progress and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self._serving):
            assert isinstance(connection, HTTP1ServerConnection)
            await connection.close()
        self.workers.shutdown(wait=False, cancel_futures=True)


class _Request(httputil.HTTPMessageDelegate):
    """One request on a connection: its headers checked, its body read within the limits, then answered."""

    def __init__(self, door: FrontDoor, client: _Client, connection: HTTP1Connection) -> None:
        self.door = door
        self.limits = door.limits
        self.client = client
        self.connection = connection
        self.start_line = httputil.RequestStartLine("", "", "")
        self.headers = httputil.HTTPHeaders()
        self.chunks: list[bytes] = []
        self.account: BodyAccount | None = None  # the body's share of the door's body budget
        self.received = 0
        self.over_limit = False  # past PEM111_MAX_REQUEST_BYTES: read on, holding nothing, for fault A1
        self.answered = False
        self._timer: object | None = None

    # -- Tornado's HTTPMessageDelegate ---------------------------------------------------------------------------

    async def headers_received(
        self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine, headers: httputil.HTTPHeaders
    ) -> None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.start_line, self.headers = start_line, headers
        if not self.client.allowed:
            # Mutual authentication failed for this connection's certificate: every request, whatever its path.
            await self._refuse(403, "Forbidden", REFUSAL_TEXT, cause="subject not allowed")
            return
        hosts = headers.get_list("Host")
        if len(hosts) > 1 or (start_line.version == "HTTP/1.1" and not hosts):
            await self._refuse(400, "Bad Request", "HTTP/1.1 requests need one Host header", cause="Host header")
            return
        declared = _declared_length(headers)
        if declared is not None and declared > self.limits.max_request_bytes:
            if not self._on_report_path() or declared > self.limits.refused_unread_bytes:
                await self._refuse(413, "Content Too Large", TOO_LARGE_TEXT, cause="declared body size")
                return
            self.over_limit = True
        self._timer = IOLoop.current().call_later(self.limits.body_timeout, self._body_timed_out)
        chunked = "Transfer-Encoding" in headers  # Tornado refuses any coding but chunked
        claim = declared if declared is not None else (self.limits.max_request_bytes if chunked else 0)
        if claim and not self.over_limit:
            self.account = self.door.bodies.open(claim, self.client.remote_ip)

    async def data_received(self, chunk: bytes) -> None:
        if self.answered:
            return
        self.received += len(chunk)
        if self.received > self.limits.max_request_bytes and not self.over_limit:  # chunked, so not declared
            self._drop_body()
            if not self._on_report_path():
                await self._refuse_midway(413, "Content Too Large", TOO_LARGE_TEXT, cause="body size")
                return
            self.over_limit = True
        if self.over_limit:
            if self.received > self.limits.refused_unread_bytes:
                await self._refuse_midway(413, "Content Too Large", TOO_LARGE_TEXT, cause="body size")
            return
        assert self.account is not None
        await self.door.bodies.take(self.account, len(chunk))  # waits while the bodies in memory are at the limit
        if not self.answered:  # else timed out or closed while waiting
            self.chunks.append(chunk)

    def finish(self) -> None:
        self._cancel_timer()
        if not self.answered:
            self.door.spawn(self._answer())

    def on_connection_close(self) -> None:
        self._cancel_timer()
        self.answered = True
        self._drop_body()

    # -- answering -----------------------------------------------------------------------------------------------

    async def _answer(self) -> None:
        body = b"".join(self.chunks)
        self.chunks = []
        try:
            environ = request_environ(
                self.start_line,
                self.headers,
                body,
                client=(self.client.remote_ip, int(self.client.address[1])),
                local=self.door.local_address,
                scheme=self.client.protocol,
                extra=self.client.ssl_environ,
            )
            if self.over_limit:
                environ["CONTENT_LENGTH"] = str(self.received)  # the application answers fault A1 unread
            status, headers, content = await self.door.answer(environ, len(body))
        except Exception as exc:  # the application answers its own errors; this is the last line
            error_id = faults.log_internal_error(log, "internal error", exc, where="in the HTTP server")
            status, headers = "500 Internal Server Error", [("Content-Type", _TEXT)]
            content = f"Internal error {error_id}\n".encode("ascii")
        finally:
            del body
            self._drop_body()
        if not self.answered:  # else the connection closed meanwhile
            close = any(name.lower() == "connection" and value.lower() == "close" for name, value in headers)
            await self._write(status, headers, content, close=close)

    async def _write(self, status: str, headers: list[tuple[str, str]], content: bytes, *, close: bool) -> None:
        self.answered = True
        code, _, reason = status.partition(" ")
        header_map = httputil.HTTPHeaders()
        for name, value in headers:
            header_map.add(name, value)
        if "Content-Length" not in header_map:
            header_map["Content-Length"] = str(len(content))
        header_map.setdefault("Server", "nhs111")
        if close:
            header_map["Connection"] = "close"
        if self.start_line.method == "HEAD":
            content = b""
        start = httputil.ResponseStartLine("HTTP/1.1", int(code), reason)
        stream = self.connection.stream
        with contextlib.suppress(iostream.StreamClosedError, httputil.HTTPOutputError):  # the client went away
            written = self.connection.write_headers(start, header_map, chunk=content)
            self.connection.finish()  # closes the connection once written, if the body was not read to its end
            if close:
                await written
                stream.close()

    async def _refuse(self, code: int, reason: str, text: str, *, cause: str) -> None:
        """Answer ``code`` now, before the body is read, and close the connection: the connection is taken from
        Tornado (which reads no further) and closed once the client has had time to read the answer."""
        self._cancel_timer()
        self._drop_body()
        self.answered = True
        log.info("request refused", extra={"client": str(self.client), "status": code, "reason": cause})
        await _answer_and_close(self.connection.detach(), code, reason, text)

    async def _refuse_midway(self, code: int, reason: str, text: str, *, cause: str) -> None:
        """Answer ``code`` while the body is being read; Tornado closes the connection once it is written."""
        self._cancel_timer()
        self._drop_body()
        log.info("request refused", extra={"client": str(self.client), "status": code, "reason": cause})
        await self._write(f"{code} {reason}", [("Content-Type", _TEXT)], (text + "\n").encode("utf-8"), close=True)

    def _body_timed_out(self) -> None:
        self._timer = None
        log.warning(
            "client timeout: the request body did not arrive in time",
            extra={"client": str(self.client), "received_bytes": self.received},
        )
        self._drop_body()
        body = b"The request body did not arrive in time\n"
        self.door.spawn(self._write("408 Request Timeout", [("Content-Type", _TEXT)], body, close=True))

    # -- helpers -------------------------------------------------------------------------------------------------

    def _on_report_path(self) -> bool:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.start_line.path).path)
        return self.start_line.method == "POST" and path in self.door.report_paths

    def _drop_body(self) -> None:
        self.chunks = []
        if self.account is not None:
            self.door.bodies.close(self.account)
            self.account = None

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            IOLoop.current().remove_timeout(self._timer)
            self._timer = None


def _declared_length(headers: httputil.HTTPHeaders) -> int | None:
    """The body's declared length; None when it is chunked or malformed (Tornado refuses the latter next)."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    first = value.split(",")[0].strip()
    return int(first) if first.isdigit() else None


async def _peek(sock: socket.socket) -> bytes:
    """The first bytes a client sent, left in the socket: a TLS ClientHello or a plain HTTP request line."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), ready)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())
    return sock.recv(8, socket.MSG_PEEK)


async def _answer_and_close(stream: iostream.IOStream, code: int, reason: str, text: str) -> None:
    """A plain-text answer written straight onto ``stream`` (no HTTP exchange owns it), then a lingering close."""
    body = (text + "\n").encode("utf-8")
    head = (
        f"HTTP/1.1 {code} {reason}\r\nServer: nhs111\r\nContent-Type: {_TEXT}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with contextlib.suppress(iostream.StreamClosedError):
        await stream.write(head.encode("ascii") + body)
    await _linger_and_close(stream)


async def _linger_and_close(stream: iostream.IOStream) -> None:
    """Close after reading (and dropping) what the client is still sending, for at most :data:`LINGER_SECONDS`
    and :data:`LINGER_BYTES`, so that the answer is not overtaken by a reset."""
    if stream.closed():
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LINGER_SECONDS
    dropped = 0
    with contextlib.suppress(iostream.StreamClosedError, TimeoutError, iostream.UnsatisfiableReadError, OSError):
        if not isinstance(stream, iostream.SSLIOStream):
            stream.socket.shutdown(socket.SHUT_WR)  # the answer is complete: the client reads end of file
        while dropped < LINGER_BYTES:
            chunk = await asyncio.wait_for(stream.read_bytes(READ_CHUNK_BYTES, partial=True), deadline - loop.time())
            dropped += len(chunk)
    stream.close()
