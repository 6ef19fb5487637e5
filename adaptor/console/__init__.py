"""The operator's web console at ``/console``: messages, their documents and delivery, rejections, replay.

Served by ``nhs111 serve`` from the same Flask application as the WSDL and the health check, and only when a
credential is configured (``PEM111_CONSOLE_USERS`` or ``PEM111_CONSOLE_TOKEN``); otherwise ``/console`` is a 404.

* :mod:`.access`: the blueprint, and what every request passes (sign-in, CSRF, headers, errors, the access log).
* :mod:`.views`: the pages (the message list and its search, a message, a Bundle version, rejections).
* :mod:`.search`: the search, read from a query string (the list's and the API's).
* :mod:`.replay`: replay, one message or a selection, always through a page that says what will happen.
* :mod:`.api`: the JSON API under ``/console/api``, and its OpenAPI document (:mod:`.openapi`).
* :mod:`.state`: what one application's console works with, kept in ``app.extensions``.
* :mod:`.auth`: credentials, the sign-in throttle, CSRF and origin checks.
* :mod:`.cda_text`: a stored request's CDA sections as plain text.

:func:`install_console` is what :func:`adaptor.http.app.create_app` calls; it may mount the console on any
Flask application, and on several in one process.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

from adaptor.config import Settings
from adaptor.console import api, replay, views  # noqa: F401  (importing them adds their routes to the blueprint)
from adaptor.console.access import URL_PREFIX, blueprint
from adaptor.console.auth import Credentials, LoginThrottle, SignedOutSessions
from adaptor.console.state import ConsoleState
from adaptor.store import MessageStore

__all__ = ["URL_PREFIX", "install_console"]

log = logging.getLogger("adaptor.console")

SESSION_COOKIE_NAME = "nhs111_console"


class _ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the cookie marked Secure whenever the request came over https
    (or always, with ``PEM111_CONSOLE_SECURE_COOKIE``): the same process may be reached both ways."""

    def __init__(self, always_secure: bool) -> None:
        self.always_secure = always_secure

    def get_cookie_secure(self, app: Flask) -> bool:
        return self.always_secure or (has_request_context() and request.is_secure)


def install_console(app: Flask, settings: Settings, *, store: MessageStore, wake: Callable[[], None]) -> bool:
    """Mount the console on ``app`` when a credential is configured; log one line either way. Returns whether
    it was mounted. Its pages read ``store``; ``wake`` wakes the outbox workers after a replay.

    Configures ``app``'s session cookie for the console: its own name, path ``/console`` (never sent to the ITK
    endpoint), HttpOnly, SameSite=Strict, Secure over https. Sessions and credential fingerprints are signed
    with ``app.secret_key``, set here from ``PEM111_CONSOLE_SECRET_KEY``.
    """
    if not settings.console_enabled:
        log.info("web console off: set PEM111_CONSOLE_USERS or PEM111_CONSOLE_TOKEN to serve it at %s", URL_PREFIX)
        return False
    secret_key = settings.console_secret_key
    if not secret_key:
        secret_key = secrets.token_hex(32)
        log.warning(
            "PEM111_CONSOLE_SECRET_KEY is not set: console sessions are signed with a random key of this process, "
            "so a restart signs everyone out and other replicas do not accept its sessions"
        )
    app.secret_key = secret_key
    app.config.update(
        SESSION_COOKIE_NAME=SESSION_COOKIE_NAME,
        SESSION_COOKIE_PATH=URL_PREFIX,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
    )
    app.session_interface = _ConsoleSessionInterface(settings.console_secure_cookie)
    ConsoleState(
        settings,
        store=store,
        wake=wake,
        credentials=Credentials(settings, secret_key),
        throttle=LoginThrottle(),
        signed_out=SignedOutSessions(),
    ).attach(app)
    app.register_blueprint(blueprint)
    users = len(settings.console_users)
    log.info(
        "web console at %s (%d user(s)%s)", URL_PREFIX, users, ", token sign-in on" if settings.console_token else ""
    )
    return True
