"""``nhs111 serve`` and ``nhs111 worker``: logging, the long-lived components (built and closed by
:mod:`adaptor.composition`), the HTTP(S) server around them (:class:`HttpServer`, the front door of
:mod:`adaptor.http.frontdoor` on an event loop thread of its own), and the outbox worker threads beside it (or,
for ``nhs111 worker``, on their own).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import platform
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from tornado.netutil import bind_sockets

from adaptor import composition
from adaptor.config import ConfigError, Settings
from adaptor.http.app import build_app
from adaptor.http.frontdoor import FrontDoor, Limits
from adaptor.http.gateway import WsgiApp
from adaptor.http.tls import ServerTls, check_combination
from adaptor.itk.schemas import warm_up
from adaptor.ops.logs import QueryStringRedactor as QueryStringRedactor  # re-exported: tests import it from here
from adaptor.ops.logs import configure_logging

log = logging.getLogger("adaptor.server")

#: Connections the kernel queues before the event loop accepts them.
LISTEN_BACKLOG = 1024
#: On SIGTERM, requests in progress get this long to be answered before their connections are closed.
SHUTDOWN_GRACE_SECONDS = 20
#: glibc malloc: arenas (a thread allocates from one; each keeps what it freed for reuse) and the size from which
#: an allocation is its own mapping, given back to the system when freed (fixed: glibc otherwise raises it to
#: the largest block freed so far, after which request bodies fragment the heap). Measured with the hostile
#: requests of docs/benchmarks.md, 16 at once: peak RSS 436 MB with glibc's defaults (8 request threads, 8+
#: arenas), 198 MB with these.
MALLOC_ARENAS = 2
MALLOC_MMAP_THRESHOLD_BYTES = 1024 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt parameters (malloc.h)
_M_ARENA_MAX = -8


@contextlib.contextmanager
def _exit_on_config_error() -> Iterator[None]:
    """A :class:`ConfigError` (a TLS setting, no allow-list, the forward target) ends the command with one line
    naming the problem and exit status 2, as every CLI error."""
    try:
        yield
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


def _bound_the_heap() -> None:
    """Tune glibc's malloc for a process whose threads take turns with large, short-lived buffers (see
    :data:`MALLOC_ARENAS`); before any thread starts. The ``MALLOC_ARENA_MAX`` and ``MALLOC_MMAP_THRESHOLD_``
    environment variables, when set, are glibc's own way and win; on another C library this does nothing."""
    if platform.libc_ver()[0] != "glibc":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    if "MALLOC_ARENA_MAX" not in os.environ:
        mallopt(_M_ARENA_MAX, MALLOC_ARENAS)
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES)


def _server_tls(settings: Settings) -> ServerTls | None:
    if not settings.tls_enabled:
        check_combination(settings)  # refuses client-certificate settings without a server certificate
        return None
    return ServerTls(settings)


# -- the HTTP server ---------------------------------------------------------------------------------------------


class HttpServer:
    """The front door (:class:`~adaptor.http.frontdoor.FrontDoor`) for ``app``, listening on the settings' host and
    port, its event loop on a thread of its own: :meth:`start`, then :meth:`stop`."""

    def __init__(self, settings: Settings, app: WsgiApp, tls: ServerTls | None = None) -> None:
        self.settings = settings
        self.door = FrontDoor(
            app,
            Limits.from_settings(settings),
            report_paths=settings.report_paths,
            tls=tls,
            threads=settings.server_threads,
        )
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)
        self.address: tuple[str, int] = ("", 0)

    def start(self) -> None:
        """Listen (raises :class:`OSError`, e.g. when the port is taken), then serve on the event loop thread."""
        sockets = bind_sockets(self.settings.port, self.settings.host or None, backlog=LISTEN_BACKLOG)
        name = sockets[0].getsockname()
        self.address = (str(name[0]), int(name[1]))
        started = threading.Event()

        def listen() -> None:
            self.door.add_sockets(sockets)
            started.set()

        self.loop.call_soon(listen)
        self._thread.start()
        started.wait()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        """Stop accepting; requests in progress get ``grace_seconds`` to be answered; then close everything."""
        if not self._thread.is_alive():
            return
        done = asyncio.run_coroutine_threadsafe(self.door.shut_down(grace_seconds), self.loop)
        with contextlib.suppress(Exception):
            done.result(grace_seconds + 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()


# -- nhs111 serve ------------------------------------------------------------------------------------------------


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, finish the requests and deliveries in flight and close.

    ``PEM111_DELIVERY_WORKERS`` outbox threads deliver beside the server (none: a separate ``nhs111 worker``
    delivers); they start only once the server listens. Under TLS, SIGHUP reloads the certificates and the CRL,
    and so does a change to their files, noticed within ``PEM111_TLS_RELOAD_SECONDS``.
    """
    _bound_the_heap()
    configure_logging(settings)
    with _exit_on_config_error():
        tls = _server_tls(settings)  # first: a bad TLS setting stops start-up before anything is opened
        components = composition.build(settings)
    # Before the first request: libxml2 fails when request threads compile the same schema at once, which a
    # burst of requests right after a (re)start would otherwise make them do.
    rules = warm_up(settings)
    log.info(
        "schema validation rules",
        extra={
            "rules_active": ",".join(rules.active),
            "rules_skipped": "; ".join(f"{rule} ({why})" for rule, why in rules.skipped.items()) or "none",
        },
    )
    app = build_app(components)

    server = HttpServer(settings, app, tls)
    try:
        server.start()
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

    host, port = server.address
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
    try:
        # The main thread only waits: signal handlers run here, between timed waits.
        next_check = time.monotonic() + settings.tls_reload_seconds
        while not stopping.wait(1.0):
            if not server.is_alive():
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
