"""``nhs111 serve``: logging, the long-lived components, and the waitress HTTP server around them."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

import waitress

from .allowlist import AllowList
from .config import ConfigError, Settings
from .forwarders import forwarder_from_settings
from .soap import silence_spyne_logging
from .store import MessageStore
from .web import create_app

log = logging.getLogger("adaptor.server")

#: waitress refuses (HTTP 413) bodies beyond this multiple of the configured maximum without passing them on;
#: between the two limits the endpoint answers with the ITK fault for rule A1, which senders understand.
WAITRESS_BODY_LIMIT_FACTOR = 2


def configure_logging(level: str) -> None:
    """One line per event on stderr at ``level``, spyne silenced (see :mod:`adaptor.soap`)."""
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        force=True,
    )
    silence_spyne_logging()


def serve(settings: Settings) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting, finish the requests in flight and close."""
    configure_logging(settings.log_level)

    try:
        forwarder = forwarder_from_settings(settings)
    except ConfigError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None  # one line naming the problem, as every CLI error
    store = MessageStore.from_settings(settings)
    store.open_if_available()
    allow_list = AllowList(settings)
    if not allow_list.configured:
        log.warning(
            "no addressing allow-list is configured: every address is accepted; in production set "
            "PEM111_ITK_ODS_CODE_LIST, PEM111_ITK_DOS_ID_LIST or PEM111_ITK_EXTERNAL_CONFIGURATION_URL"
        )
    allow_list.start()
    app = create_app(settings, store=store, forwarder=forwarder, allow_list=allow_list)

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
        "listening on http://%s:%s%s (message store %s, delivery to %s)",
        url_host,
        port,
        settings.report_paths[0],
        store.url,
        forwarder.target,
    )
    try:
        server.run()
    finally:
        allow_list.stop()
        app.close()
        store.close()
        log.info("stopped")
