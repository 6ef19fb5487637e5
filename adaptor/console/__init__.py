"""The operator's web console at ``/console``: messages, their documents and delivery, rejections, replay.

Served by ``nhs111 serve`` from the same Flask application as the WSDL and the health check, and only when a
credential is configured (``PEM111_CONSOLE_USERS`` or ``PEM111_CONSOLE_TOKEN``); otherwise ``/console`` is a 404.

* :mod:`.auth`: credentials, the sign-in throttle, CSRF and origin checks.
* :mod:`.views`: the blueprint (pages, forms, security headers, the access log).
* :mod:`.cda_text`: a stored request's CDA sections as plain text.

:func:`install_console` is what :func:`adaptor.web.create_app` calls; :func:`create_console` is the blueprint
factory it uses (for mounting the console on another Flask application).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from flask import Blueprint, Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface

from adaptor.config import Settings
from adaptor.console.auth import Credentials, LoginThrottle
from adaptor.console.views import URL_PREFIX, create_blueprint
from adaptor.store import MessageStore

__all__ = ["URL_PREFIX", "create_console", "install_console"]

log = logging.getLogger("adaptor.console")

SESSION_COOKIE_NAME = "nhs111_console"


class _ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the cookie marked Secure whenever the request came over https
    (or always, with ``PEM111_CONSOLE_SECURE_COOKIE``): the same process may be reached both ways."""

    def __init__(self, always_secure: bool) -> None:
        self.always_secure = always_secure

    def get_cookie_secure(self, app: Flask) -> bool:
        return self.always_secure or (has_request_context() and request.is_secure)


def create_console(
    settings: Settings,
    *,
    store: MessageStore,
    wake: Callable[[], None],
    secret_key: str,
) -> Blueprint:
    """The console blueprint. The application that registers it must use ``secret_key`` as its
    ``secret_key`` (sessions and credential fingerprints are signed with it): :func:`install_console` does."""
    return create_blueprint(
        settings, store=store, wake=wake, credentials=Credentials(settings, secret_key), throttle=LoginThrottle()
    )


def install_console(app: Flask, settings: Settings, *, store: MessageStore, wake: Callable[[], None]) -> bool:
    """Mount the console on ``app`` when a credential is configured; log one line either way. Returns whether
    it was mounted.

    Configures ``app``'s session cookie for the console: its own name, path ``/console`` (never sent to the ITK
    endpoint), HttpOnly, SameSite=Strict, Secure over https.
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
    app.register_blueprint(create_console(settings, store=store, wake=wake, secret_key=secret_key))
    users = len(settings.console_users)
    log.info(
        "web console at %s (%d user(s)%s)", URL_PREFIX, users, ", token sign-in on" if settings.console_token else ""
    )
    return True
