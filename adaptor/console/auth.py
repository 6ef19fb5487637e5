"""Who may use the console, and the checks every console request passes: credentials, sessions, CSRF.

Credentials come from configuration only (:class:`Credentials`): users with werkzeug password hashes
(``PEM111_CONSOLE_USERS``) and one shared token (``PEM111_CONSOLE_TOKEN``). A browser signs in once and then
carries a signed session cookie; a script sends the token as ``Authorization: Bearer <token>`` on each request.

The session cookie is Flask's (signed, not encrypted) and holds no secret: the user name, when the sign-in
happened, a random session id, the CSRF token and a *fingerprint* of the credential used. The fingerprint ties
the session to that credential, so changing a user's password hash, removing the user or rotating the token
(and restarting) ends every session made with the old one, although nothing is kept on the server.

Signing out revokes the session id on the server (:class:`SignedOutSessions`), so that a copy of the cookie
taken before is refused too; the signature alone would keep it valid until it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Request
from werkzeug.security import check_password_hash, generate_password_hash

from adaptor.config import Settings

#: The user name a token sign-in is shown (and logged) as.
TOKEN_USER = "token"


@dataclass(frozen=True)
class Identity:
    """A signed-in operator: a configured user, or the token."""

    user: str
    kind: str  # "password" or "token"
    #: Whether the operator may replay messages; a user of ``PEM111_CONSOLE_READ_ONLY_USERS`` may only read.
    may_replay: bool = True


class Credentials:
    """The configured users and token, and the constant-time checks against them."""

    def __init__(self, settings: Settings, secret_key: str) -> None:
        self._users = dict(settings.console_users)
        self._read_only = frozenset(settings.console_read_only_users)
        self._token = settings.console_token
        self._key = secret_key.encode("utf-8")
        # Checked against when the user is unknown, so that an unknown name costs as much as a wrong password
        # and response times do not tell which user names exist.
        self._decoy_hash = generate_password_hash(secrets.token_urlsafe(16)) if self._users else ""

    @property
    def has_users(self) -> bool:
        return bool(self._users)

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    def check_password(self, user: str, password: str) -> Identity | None:
        """The identity for a correct user name and password, else ``None``."""
        password_hash = self._users.get(user)
        if password_hash is None:
            if self._decoy_hash:
                check_password_hash(self._decoy_hash, password)
            return None
        if not check_password_hash(password_hash, password):
            return None
        return self.identity(user, "password")

    def identity(self, user: str, kind: str) -> Identity:
        """The identity of a ``kind`` sign-in as ``user``, with the role configured now (so a change of role
        takes effect on the next request, not the next sign-in)."""
        return Identity(user, kind, may_replay=kind == "token" or user not in self._read_only)

    def check_token(self, token: str) -> Identity | None:
        """The token identity when ``token`` is the configured one (compared in constant time)."""
        if not self._token or not hmac.compare_digest(token.encode("utf-8"), self._token.encode("utf-8")):
            return None
        return Identity(TOKEN_USER, "token")

    def fingerprint(self, identity: Identity) -> str | None:
        """A keyed digest of the credential behind ``identity`` as configured now; ``None`` when it is gone."""
        credential = self._token if identity.kind == "token" else self._users.get(identity.user)
        if not credential:
            return None
        message = f"{identity.kind}\0{identity.user}\0{credential}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def still_valid(self, identity: Identity, fingerprint: str) -> bool:
        current = self.fingerprint(identity)
        return current is not None and hmac.compare_digest(current, fingerprint)


class LoginThrottle:
    """At most ``limit`` failed sign-ins per client address in ``window`` seconds; then refuse until the
    oldest failure leaves the window. Per process: replicas count separately (each one still caps guessing).

    Behind a reverse proxy every client shares the proxy's address, so a password-guessing client can lock out
    everyone for one window: the price of having no per-user lockout an attacker could aim at one operator.
    """

    def __init__(self, limit: int = 10, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` may try again; 0 when it may now."""
        now = time.monotonic()
        with self._lock:
            failures = self._prune(key, now)
            if len(failures) < self.limit:
                return 0
            return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._prune(key, now).append(now)
            if len(self._failures) > 10_000:  # never grow without bound under a spray of addresses
                self._failures = {k: v for k, v in self._failures.items() if v and v[-1] > now - self.window}

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures


class SignedOutSessions:
    """The ids of the sessions signed out in this process, each kept until its session would have expired anyway.

    In process memory, not in the store: a sign-out is known to the replica that served it, and is forgotten on
    a restart. Nothing outlives a sign-in's lifetime, so the set is bounded by the sign-outs of one
    ``PEM111_CONSOLE_SESSION_HOURS``, and only a signed-in operator can add to it. A table in the store would
    make revocation hold across replicas and restarts at the price of a schema migration and a store query on
    every console request; the README's console section says what this choice leaves open.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # session id -> when its session expires (time.time())
        self._lock = threading.Lock()

    def revoke(self, session_id: str, expires_at: float) -> None:
        now = time.time()
        with self._lock:
            self._until = {key: until for key, until in self._until.items() if until > now}
            if expires_at > now:
                self._until[session_id] = expires_at

    def __contains__(self, session_id: object) -> bool:
        with self._lock:
            return session_id in self._until


def new_session_id() -> str:
    return secrets.token_urlsafe(18)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, sent: str | None) -> bool:
    """The form's token equals the session's (constant time); both must be present."""
    if not expected or not sent:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), sent.encode("utf-8"))


def same_origin(request: Request) -> bool:
    """``Origin`` (else ``Referer``), when the browser sent one, names this host.

    The CSRF token is the real defence; this refuses cross-site posts even where a token leaked. Only the host
    and port are compared: behind a TLS-terminating proxy the scheme seen here differs from the browser's, so the
    proxy must pass the ``Host`` header through unchanged.
    """
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin != "null" and _host_of(origin) == request.host.lower()
    referer = request.headers.get("Referer")
    if referer:
        return _host_of(referer) == request.host.lower()
    return True  # neither sent (privacy settings): the CSRF token decides


def _host_of(url: str) -> str:
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, else ``None``."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
