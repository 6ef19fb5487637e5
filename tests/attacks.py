"""The attacks of issue 12 ("Harden the front door") against a real ``nhs111 serve``, as building blocks.

Shared by the short adversarial suite (``tests/test_front_door.py``) and its long form (``benchmarks/frontdoor.py``,
which loads this module in place, as it loads ``server_fixture`` and ``tls_certs``), and by
``tests/test_payload_limits.py`` for the payload builders:

* hostile requests: compressed payload bombs (:func:`element_bomb`, :func:`comment_bomb`, made with
  :func:`gzip_stream`, :func:`padded_cda` and :func:`request_with`), large plain bodies (:func:`plain_elements`,
  :func:`plain_text`), DOCTYPEs in UTF-16 and UTF-32 (:func:`with_doctype`, :func:`payload_with_doctype`), and
  ambiguous framings (:data:`SMUGGLING`);
* :func:`exchange`: one request, as raw bytes, on a new connection (plain or TLS, from any loopback address), and
  everything that came back on it: each response, and whether the server closed the connection;
* :class:`Crowd`: the idle and trickling connections of the starvation attack, held open until closed.

Everything is synthetic (``itk_factory``) and goes to loopback addresses only.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from itk_factory import (
    NS,
    RECIPIENT_DOS,
    RECIPIENT_ODS,
    SOAP11,
    build_request,
    clinical_document,
    find,
    new_id,
    to_bytes,
)
from lxml import etree

ITK = NS["itk"]
NOT_XML = "This is not a valid XML message"
NOT_DECODED = "Payload could not be decoded"
TOO_LARGE = "Message too large"
DOCTYPE_REFUSED = "a document type declaration (DOCTYPE) is not allowed in a SOAP message"
XML_CONTENT_TYPE = "text/xml; charset=utf-8"
#: The settings of a server that accepts ``itk_factory``'s requests (its recipients on the allow-lists).
ADDRESSING = {"PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS, "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS}

# == hostile requests ===============================================================================================


def gzip_stream(parts: list[bytes], repeat: int = 1) -> bytes:
    """One gzip member of ``parts`` with the middle part repeated ``repeat`` times, built without holding it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [compressor.compress(parts[0])]
    block = parts[1] * 100_000
    for _ in range(repeat // 100_000):
        out.append(compressor.compress(block))
    out.append(compressor.compress(parts[1] * (repeat % 100_000)))
    out += [compressor.compress(parts[2]), compressor.flush()]
    return b"".join(out)


def padded_cda(padding: bytes = b"", repeat: int = 0) -> list[bytes]:
    """A valid ClinicalDocument split where ``padding`` (repeated) goes: before its closing tag."""
    document = etree.tostring(clinical_document(), encoding="UTF-8")
    end = document.rindex(b"</")
    return [document[:end], padding, document[end:]]


def request_with(data: bytes, encoding: str = "gzip", *, message_id: str | None = None) -> bytes:
    """A valid request whose one payload carries ``data`` (already gzip-compressed for ``gzip``) as base64."""
    root = build_request(encoding=encoding, message_id=message_id)
    find(root, "itk:payloads/itk:payload").text = base64.b64encode(data).decode()
    return to_bytes(root)


@functools.cache
def _padded_gzip(padding: bytes, repeat: int) -> bytes:
    return gzip_stream(padded_cda(padding), repeat)


def element_bomb(message_id: str | None = None) -> bytes:
    """The issue's 65 KB request: base64 + gzip of a CDA with 12 million empty elements."""
    return request_with(_padded_gzip(b"<a/>", 12_000_000), message_id=message_id)


def comment_bomb(message_id: str | None = None) -> bytes:
    """The issue's valid CDA padded with 6 million comments, gzip + base64 (about 85 KB)."""
    return request_with(_padded_gzip(b"<!---->", 6_000_000), message_id=message_id)


def soap_body(inner: bytes) -> bytes:
    """A SOAP 1.1 envelope with an empty header and ``inner`` as its body."""
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP11}"><s:Header/><s:Body>'.encode()
        + inner
        + b"</s:Body></s:Envelope>"
    )


def plain_elements(size: int = 10_000_000) -> bytes:
    """The issue's large plain body: ``size`` bytes of empty elements in soap:Body (2.5 million for 10 MB)."""
    return soap_body(b"<a/>" * (size // 4))


def plain_text(size: int = 10_000_000) -> bytes:
    """One text node of ``size`` bytes in soap:Body."""
    return soap_body(b"<a>" + b"x" * size + b"</a>")


#: DOCTYPEs are refused in any encoding, whether it is given by a byte order mark or only declared:
#: ``(declared name, codec, byte order mark)``.
WIDE_ENCODINGS = (
    ("UTF-16", "utf-16-le", b"\xff\xfe"),
    ("UTF-16", "utf-16-be", b""),
    ("UTF-32", "utf-32-le", b"\xff\xfe\x00\x00"),
    ("UTF-32", "utf-32-be", b""),
)


def encoding_id(name: str, codec: str, bom: bytes) -> str:
    return f"{codec}-{'bom' if bom else 'declared'}"


def encoded(text: str, name: str, codec: str, bom: bytes) -> bytes:
    """``text`` after an XML declaration naming ``name``, in ``codec``, after ``bom``."""
    return bom + (f'<?xml version="1.0" encoding="{name}"?>' + text).encode(codec)


def with_doctype(system_id: str, name: str, codec: str, bom: bytes, *, message_id: str | None = None) -> bytes:
    """A valid request with a DOCTYPE whose external subset is ``system_id`` (a local path), in that encoding."""
    text = to_bytes(build_request(message_id=message_id)).decode("utf-8").split("?>", 1)[1]
    return encoded(f'<!DOCTYPE x SYSTEM "{system_id}">{text}', name, codec, bom)


def payload_with_doctype(system_id: str, name: str, codec: str, bom: bytes) -> bytes:
    """A valid request whose base64 payload is a document with that DOCTYPE, in that encoding."""
    return request_with(encoded(f'<!DOCTYPE x SYSTEM "{system_id}"><x/>', name, codec, bom), "base64")


def attachment_with_doctype(system_id: str, name: str, codec: str, bom: bytes, *, message_id: str) -> bytes:
    """A valid request whose CDA carries a Pathways attachment with that DOCTYPE, in that encoding."""
    attachment = encoded(f'<!DOCTYPE x SYSTEM "{system_id}"><PathwaysCase/>', name, codec, bom)
    document = clinical_document(pathways_base64=base64.b64encode(attachment).decode())
    return to_bytes(build_request(message_id=message_id, documents=[document]))


#: What a smuggled request looks like: a complete request of its own, which must never be answered.
HIDDEN = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
_POST = b"POST /report HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
#: A Content-Length value, then a body: 4 bytes and the hidden request, which the value counts in or not.
_HIDDEN_AFTER_4 = b"%d\r\n\r\n<x/>" % (4 + len(HIDDEN)) + HIDDEN
#: Framings a front door must refuse (400, then close), each with a second request hidden after or in its body.
SMUGGLING = {
    "conflicting-content-length": _POST + b"Content-Length: 4\r\nContent-Length: " + _HIDDEN_AFTER_4,
    "content-length-list": _POST + b"Content-Length: 4, " + _HIDDEN_AFTER_4,
    "content-length-and-chunked": _POST
    + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(HIDDEN))
    + HIDDEN,
    "chunked-and-content-length": _POST
    + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n0\r\n\r\n" % (5 + len(HIDDEN))
    + HIDDEN,
    "invalid-chunk-size": _POST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n<x/>\r\n0\r\n\r\n" + HIDDEN,
    "chunk-size-overflow": _POST + b"Transfer-Encoding: chunked\r\n\r\n1%s\r\n<x/>\r\n0\r\n\r\n" % (b"0" * 20) + HIDDEN,
    "transfer-coding-not-chunked": _POST + b"Transfer-Encoding: gzip\r\n\r\n" + HIDDEN,
    "no-host": b"GET /healthz HTTP/1.1\r\n\r\n" + HIDDEN,
    "two-hosts": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: example.test\r\n\r\n" + HIDDEN,
}


def post(body: bytes, *, path: str = "/report", content_type: str = XML_CONTENT_TYPE, close: bool = True) -> bytes:
    """A POST of ``body`` with its length declared."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return head.encode("ascii") + (b"Connection: close\r\n" if close else b"") + b"\r\n" + body


def get(path: str, *, close: bool = True) -> bytes:
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + ("Connection: close\r\n" if close else "")
    return (head + "\r\n").encode("ascii")


def good_report(message_id: str | None = None) -> tuple[bytes, str]:
    """A valid request with a fresh MessageID (accepted by a server whose allow-lists name ``itk_factory``'s
    recipients), and that MessageID."""
    message_id = message_id or new_id()
    return to_bytes(build_request(message_id=message_id)), message_id


# == talking to the server ==========================================================================================


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def fault(self) -> Fault | None:
        """The SOAP fault this response carries, if it is one."""
        return Fault.of(self.body) if self.status == 500 else None

    def ok(self) -> bool:
        """Whether this is the ITK success answer (SimpleMessageResponse OK)."""
        if self.status != 200:
            return False
        try:
            envelope = etree.fromstring(self.body)
        except etree.XMLSyntaxError:
            return False
        text = envelope.findtext(f"{{{SOAP11}}}Body/{{{ITK}}}SimpleMessageResponse")
        return (text or "").startswith("OK")


@dataclass(frozen=True)
class Fault:
    faultcode: str  # the local part, e.g. "Client"
    code: str  # the ToolkitErrorInfo ErrorCode
    text: str
    diagnostic: str

    @classmethod
    def of(cls, body: bytes) -> Fault | None:
        try:
            envelope = etree.fromstring(body)
        except etree.XMLSyntaxError:
            return None
        fault = envelope.find(f"{{{SOAP11}}}Body/{{{SOAP11}}}Fault")
        info = fault.find(f"detail/{{{ITK}}}ToolkitErrorInfo") if fault is not None else None
        if fault is None or info is None:
            return None
        return cls(
            faultcode=(fault.findtext("faultcode") or "").rpartition(":")[2],
            code=(info.findtext(f"{{{ITK}}}ErrorCode") or "").strip(),
            text=info.findtext(f"{{{ITK}}}ErrorText") or "",
            diagnostic=info.findtext(f"{{{ITK}}}ErrorDiagnosticText") or "",
        )


@dataclass
class Reply:
    """What came back on one connection."""

    responses: list[Response] = field(default_factory=list)
    #: The server closed the connection (end of file or reset) before the client stopped waiting.
    closed: bool = False
    #: From the connection attempt (TCP and TLS handshakes included) to the first complete response, or to the
    #: end without one.
    seconds: float = 0.0
    #: Why sending or reading stopped early (a reset, a timeout), for messages.
    error: str | None = None
    #: Bytes that came after the last complete response.
    rest: bytes = b""

    @property
    def status(self) -> int | None:
        return self.responses[0].status if self.responses else None

    @property
    def first(self) -> Response:
        assert self.responses, f"no response ({self.error or 'connection closed'})"
        return self.responses[0]

    def __str__(self) -> str:
        statuses = [f"{r.status} {r.body[:200]!r}" for r in self.responses]
        return (
            f"Reply({statuses}, closed={self.closed}, {self.seconds:.2f} s, error={self.error}, "
            f"rest={self.rest[:80]!r})"
        )


def connect(
    port: int, *, source: str = "127.0.0.1", context: ssl.SSLContext | None = None, timeout: float = 10.0
) -> socket.socket:
    """A connection to 127.0.0.1:``port`` from ``source`` (any 127.x.y.z), with TLS when ``context`` is given."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    if context is None:
        return raw
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def exchange(
    port: int,
    request: bytes | Iterable[bytes],
    *,
    source: str = "127.0.0.1",
    context: ssl.SSLContext | None = None,
    timeout: float = 30.0,
    until_closed: bool = True,
) -> Reply:
    """Send ``request`` (bytes, or pieces sent one after the other, stopping as soon as the server answers) on a
    new connection and read what comes back until the server closes it, or ``timeout`` seconds; with
    ``until_closed=False``, only until the first complete response."""
    reply = Reply()
    data = b""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout
    try:
        sock = connect(port, source=source, context=context, timeout=timeout)
    except (OSError, ssl.SSLError) as exc:
        reply.error, reply.closed = f"connect: {type(exc).__name__}: {exc}", True
        return reply
    with sock:
        try:
            for index, piece in enumerate([request] if isinstance(request, bytes) else request):
                early = _early_answer(sock) if index else None
                if early is not None:  # answered (or closed) while still sending: stop, as curl does
                    data += early
                    reply.closed = early == b""
                    break
                sock.sendall(piece)
        except OSError as exc:  # the server refused and closed while the body was on its way
            reply.error = f"send: {type(exc).__name__}: {exc}"
        while not reply.closed and (until_closed or not parse_responses(data)[0]):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reply.error = reply.error or f"no end of the connection within {timeout} s"
                break
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                reply.error = reply.error or f"recv: {type(exc).__name__}: {exc}"
                reply.closed = True
                break
            if not chunk:
                reply.closed = True
                break
            data += chunk
            responses, _ = parse_responses(data)
            if responses and not reply.seconds:
                reply.seconds = time.perf_counter() - started
            if responses and not until_closed:
                break
    reply.responses, reply.rest = parse_responses(data)
    if not reply.seconds:
        reply.seconds = time.perf_counter() - started
    return reply


def _early_answer(sock: socket.socket) -> bytes | None:
    """What the server has sent so far (``b""``: it closed), or None when nothing has come. A read, not a
    ``select``: after a TLS 1.3 handshake the socket is readable with session tickets, which are not an answer."""
    timeout = sock.gettimeout()
    sock.settimeout(0)
    try:
        return sock.recv(65536)
    except (BlockingIOError, ssl.SSLWantReadError):
        return None
    except OSError:
        return b""
    finally:
        sock.settimeout(timeout)


def parse_responses(data: bytes) -> tuple[list[Response], bytes]:
    """The complete HTTP/1.1 responses at the start of ``data`` (each with a Content-Length), and what follows."""
    responses = []
    while (end := data.find(b"\r\n\r\n")) >= 0:
        lines = data[:end].decode("latin-1").split("\r\n")
        match = re.match(r"HTTP/1\.[01] (\d{3}) ?(.*)", lines[0])
        if match is None:
            break
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if len(data) < end + 4 + length:
            break
        responses.append(Response(int(match.group(1)), match.group(2), headers, data[end + 4 : end + 4 + length]))
        data = data[end + 4 + length :]
    return responses, data


def chunked(body: bytes, *, path: str = "/report", size: int = 256 * 1024) -> Iterable[bytes]:
    """``body`` POSTed with chunked transfer coding: the head, then one piece a chunk (for :func:`exchange`)."""
    yield (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {XML_CONTENT_TYPE}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    for start in range(0, len(body), size):
        piece = body[start : start + size]
        yield b"%x\r\n" % len(piece) + piece + b"\r\n"
    yield b"0\r\n\r\n"


# == starvation ======================================================================================================


#: The start of a TLS ClientHello: a connection that begins a handshake and never finishes it.
#: How long a stalled body is sent before the sender gives up: the server stops reading the bodies of an address
#: whose share of the body budget is full, and the rest stays in the sender's buffers.
STALLED_SEND_SECONDS = 3.0
PARTIAL_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"


class Crowd:
    """Connections held open against a server, from ``source`` (another loopback address than the probes'):

    * ``idle`` connections that send nothing: over TLS, every other one never starts its handshake and the rest
      complete it (with the ``contexts`` in turn) and then send nothing;
    * ``trickling`` connections that send one byte every ``interval`` seconds: every other one in its headers
      (over TLS with the ``contexts`` in turn), the rest in a body declared ``body_length`` bytes long (over TLS
      with ``contexts[0]``: a client whose subject is not allowed is refused, 403, as soon as its headers are
      complete, which :mod:`test_tls` covers);
    * ``half_handshakes`` connections that send the start of a TLS ClientHello and nothing more;
    * ``stalled_bodies`` connections (plain) that send a body declared ``body_length`` bytes long but for its last
      byte, and then nothing more.

    :meth:`held` counts those the server has not closed. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        port: int,
        *,
        source: str = "127.0.0.2",
        idle: int = 64,
        trickling: int = 64,
        contexts: Sequence[ssl.SSLContext] = (),
        half_handshakes: int = 0,
        stalled_bodies: int = 0,
        interval: float = 0.5,
        body_length: int = 8_000_000,
    ) -> None:
        self.connections: list[socket.socket] = []
        self.tricklers: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        try:
            for index in range(idle):
                tls = bool(contexts) and index % 2 == 1
                context = contexts[(index // 2) % len(contexts)] if tls else None
                self.connections.append(connect(port, source=source, context=context))
            for index in range(trickling):
                in_body = index % 2 == 1
                context = None
                if contexts:
                    context = contexts[0] if in_body else contexts[(index // 2) % len(contexts)]
                sock = connect(port, source=source, context=context)
                sock.sendall(
                    b"POST /report HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\n"
                    + (b"Content-Length: %d\r\n\r\n<" % body_length if in_body else b"X-Slow: ")
                )
                self.connections.append(sock)
                self.tricklers.append(sock)
            for _ in range(half_handshakes):
                sock = connect(port, source=source)
                sock.sendall(PARTIAL_CLIENT_HELLO)
                self.connections.append(sock)
            for _ in range(stalled_bodies):
                sock = connect(port, source=source, timeout=STALLED_SEND_SECONDS)
                self.connections.append(sock)
                with contextlib.suppress(TimeoutError):
                    # Times out once the server stops reading: this address's share of the body budget is full.
                    sock.sendall(post(b"x" * body_length, close=False)[:-1])
        except BaseException:
            self.close()
            raise
        self._thread = threading.Thread(target=self._trickle, args=(interval,), name="trickle", daemon=True)
        self._thread.start()

    def _trickle(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                for sock in self.tricklers:
                    with contextlib.suppress(OSError):
                        sock.send(b"a")

    def held(self) -> int:
        """How many of the connections the server still holds open (has neither closed nor answered)."""
        count = 0
        with self._lock:
            for sock in self.connections:
                timeout = sock.gettimeout()
                sock.settimeout(0)
                try:
                    sock.recv(1)  # end of file, a reset or an answer: not held
                except (BlockingIOError, ssl.SSLWantReadError):
                    count += 1
                except OSError:
                    pass
                finally:
                    with contextlib.suppress(OSError):
                        sock.settimeout(timeout)
        return count

    def __len__(self) -> int:
        return len(self.connections)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            for sock in self.connections:
                sock.close()

    def __enter__(self) -> Crowd:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
