"""The WSGI side of the front door (PEP 3333): the environ of a complete request whose body is in memory, and an
application's whole answer, collected in a worker thread."""

from __future__ import annotations

import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tornado import httputil

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: A complete answer: status line text, headers, body.
Answer = tuple[str, list[tuple[str, str]], bytes]

#: Request headers a proxy would set; with no proxy trusted they are dropped before the application, so that
#: nothing can take a client's word for its address or scheme.
UNTRUSTED_PROXY_HEADERS = frozenset(
    {"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-By"}
)


def request_environ(
    start_line: httputil.RequestStartLine,
    headers: httputil.HTTPHeaders,
    body: bytes,
    *,
    client: tuple[str, int],
    local: tuple[str, int],
    scheme: str,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The environ of a request from ``client`` received on ``local``; ``extra`` (TLS facts) added to it."""
    target = urllib.parse.urlsplit(start_line.path)
    server_name, server_port = _host_and_port(headers.get("Host", ""), local)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": start_line.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": urllib.parse.unquote_to_bytes(target.path).decode("latin-1"),
        "QUERY_STRING": target.query,
        "SERVER_NAME": server_name,
        "SERVER_PORT": server_port,
        "SERVER_PROTOCOL": start_line.version,
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": str(client[1]),
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": BodyReader(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        **extra,
    }
    for name in headers:
        if name in UNTRUSTED_PROXY_HEADERS:
            continue
        value = ",".join(headers.get_list(name))
        if name == "Content-Type":
            environ["CONTENT_TYPE"] = value
        elif name not in ("Content-Length", "Transfer-Encoding"):
            environ["HTTP_" + name.upper().replace("-", "_")] = value
    return environ


def _host_and_port(host: str, local: tuple[str, int]) -> tuple[str, str]:
    """SERVER_NAME and SERVER_PORT from a Host header, the listening address where it has none."""
    try:
        parts = urllib.parse.urlsplit("//" + host)
        name, port = parts.hostname, parts.port
    except ValueError:
        name, port = None, None
    return (name or local[0]), str(port or local[1])


class BodyReader:
    """``wsgi.input`` over the body in memory."""

    def __init__(self, body: bytes) -> None:
        self._body = memoryview(body)
        self._position = 0

    def read(self, size: int | None = -1) -> bytes:
        end = len(self._body) if size is None or size < 0 else min(len(self._body), self._position + size)
        data = bytes(self._body[self._position : end])
        self._position = end
        return data

    def readline(self, size: int | None = -1) -> bytes:
        newline = bytes(self._body[self._position :]).find(b"\n")
        end = len(self._body) if newline < 0 else self._position + newline + 1
        if size is not None and size >= 0:
            end = min(end, self._position + size)
        return self.read(end - self._position)

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def call_application(app: WsgiApp, environ: dict[str, Any]) -> Answer:
    """Run ``app`` for ``environ`` in a worker thread and collect its whole answer."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
        if exc_info and started:
            raise exc_info[1].with_traceback(exc_info[2])
        started[:] = [(status, list(headers))]
        return written.append

    result = app(environ, start_response)
    try:
        written.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the application did not start a response")
    status, headers = started[0]
    environ.clear()
    return status, headers, b"".join(written)
