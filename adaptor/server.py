"""``nhs111 serve`` and ``nhs111 worker``: logging, the long-lived components, the waitress HTTP server around them,
and the outbox worker threads beside it (or, for ``nhs111 worker``, on their own)."""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from types import FrameType

import waitress

from .allowlist import AllowList
from .config import ConfigError, Settings
from .forwarders import Forwarder, forwarder_from_settings
from .outbox import OutboxWorker
from .schemas import warm_up
from .soap import silence_spyne_logging
from .store import MessageStore
from .web import create_app

log = logging.getLogger("adaptor.server")

#: waitress refuses (HTTP 413) bodies beyond this multiple of the configured maximum without passing them on;
#: between the two limits the endpoint answers with the ITK fault for rule A1, which senders understand.
WAITRESS_BODY_LIMIT_FACTOR = 2


#: The HTTP servers' own loggers: their lines may quote a request target.
HTTP_SERVER_LOGGERS = ("waitress", "werkzeug")

_QUERY_STRING = re.compile(r"\?[^\s\"']*")


class QueryStringRedactor(logging.Filter):
    """Cut the query string out of any request target an HTTP server's logger writes.

    waitress logs no access lines and quotes only the path in its error lines (``Exception while serving
    /console/messages``), and werkzeug's request lines come only from its development server, which is never
    used here. This is the guarantee should either start quoting whole targets: console searches travel in query
    strings and can be NHS numbers or names. The console logs its own requests by route template
    (``adaptor.console.access``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in HTTP_SERVER_LOGGERS:
            message = record.getMessage()
            redacted = _QUERY_STRING.sub("?<query omitted>", message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


def configure_logging(level: str) -> None:
    """One line per event on stderr at ``level``, spyne silenced (see :mod:`adaptor.soap`), query strings kept
    out of the HTTP servers' lines (:class:`QueryStringRedactor`).

    pika logs every failed connection attempt at ERROR with a traceback: during a broker outage that is one
    traceback per retry. The outbox already logs each failed delivery once, so pika is held to CRITICAL
    unless the adaptor itself runs at DEBUG.
    """
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        # On the handler, not the loggers: a logger's filters do not see its children's records.
        handler.addFilter(QueryStringRedactor())
    silence_spyne_logging()
    if level != "DEBUG":
        logging.getLogger("pika").setLevel(logging.CRITICAL)


def _forwarder(settings: Settings) -> Forwarder:
    try:
        return forwarder_from_settings(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None  # one line naming the problem, as every CLI error


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, finish the requests and deliveries in flight and close.

    ``PEM111_DELIVERY_WORKERS`` outbox threads deliver beside the server (none: a separate ``nhs111 worker``
    delivers); they start only once the server listens.
    """
    configure_logging(settings.log_level)

    forwarder = _forwarder(settings)
    store = MessageStore.from_settings(settings)
    store.open_if_available()
    allow_list = AllowList(settings)
    if not allow_list.configured:
        log.warning(
            "no addressing allow-list is configured: every address is accepted; in production set "
            "PEM111_ITK_ODS_CODE_LIST, PEM111_ITK_DOS_ID_LIST or PEM111_ITK_EXTERNAL_CONFIGURATION_URL"
        )
    allow_list.start()
    # Before the first request: libxml2 fails when request threads compile the same schema at once, which a
    # burst of requests right after a (re)start would otherwise make them do.
    warm_up(settings)
    worker = OutboxWorker(settings, store, forwarder)
    app = create_app(settings, store=store, forwarder=forwarder, allow_list=allow_list, worker=worker)

    try:
        server = waitress.create_server(
            app,
            host=settings.host,
            port=settings.port,
            threads=settings.server_threads,
            max_request_body_size=settings.max_request_bytes * WAITRESS_BODY_LIMIT_FACTOR,
            clear_untrusted_proxy_headers=True,
            ident="nhs111",
        )
    except OSError as exc:  # e.g. the port is taken
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc.strerror or exc)
        allow_list.stop()
        app.close()
        forwarder.close()
        store.close()
        raise SystemExit(2) from None

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        raise KeyboardInterrupt  # waitress's loop catches it and shuts its worker threads down

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    host, port = server.effective_host, server.effective_port
    url_host = f"[{host}]" if ":" in str(host) else host
    log.info(
        "listening on http://%s:%s%s (message store %s, delivery to %s, %s mode, %d delivery thread(s))",
        url_host,
        port,
        settings.report_paths[0],
        store.url,
        forwarder.target,
        settings.delivery_mode,
        worker.thread_count,
    )
    worker.start()
    try:
        server.run()
    finally:
        worker.stop()
        allow_list.stop()
        app.close()
        forwarder.close()
        store.close()
        log.info("stopped")


def run_worker(settings: Settings) -> None:
    """``nhs111 worker``: deliver from the outbox until SIGTERM or SIGINT, then finish the deliveries in flight.

    Runs ``PEM111_DELIVERY_WORKERS`` threads (at least one), against the same store as the servers; several
    workers (and servers' own threads) may share one store: each message is claimed by one of them at a time.
    """
    configure_logging(settings.log_level)
    forwarder = _forwarder(settings)
    store = MessageStore.from_settings(settings)
    store.open_if_available()
    worker = OutboxWorker(settings, store, forwarder, threads=max(1, settings.delivery_workers))
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info(
        "delivering from message store %s to %s with %d thread(s)", store.url, forwarder.target, worker.thread_count
    )
    worker.start()
    try:
        while not stopping.wait(1.0):  # a timed wait: signal handlers run in the main thread between waits
            pass
    finally:
        worker.stop()
        forwarder.close()
        store.close()
        log.info("stopped")
