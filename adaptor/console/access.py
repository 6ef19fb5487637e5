"""The console blueprint and what every console request passes: sign-in, checks, headers, errors, the access log.

Every request passes, in order: the access-log clock, authentication (session cookie or bearer token), and for
a POST made with a session cookie the Origin/Referer and CSRF checks. Every response gets the security headers;
pages are never cached (they show patient data). Signing in and out are here too; the pages and forms that
show and replay messages are in :mod:`adaptor.console.views`, which adds them to :data:`blueprint`.

The blueprint is one module-level object registered on each application that serves the console; what belongs
to one application is read through :func:`adaptor.console.state.console_state`.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, abort, flash, g, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from adaptor.console.auth import (
    Identity,
    bearer_token,
    csrf_matches,
    new_csrf_token,
    new_session_id,
    same_origin,
)
from adaptor.console.state import console_state
from adaptor.itk.faults import log_internal_error
from adaptor.itk.wire import interaction_name
from adaptor.store import Status, StoreError

log = logging.getLogger("adaptor.console")
#: One line per console request: method, route template, status, duration, user. Never a query string or a
#: path value: search terms can be NHS numbers or names.
access_log = logging.getLogger("adaptor.console.access")

URL_PREFIX = "/console"
#: The JSON API's routes (:mod:`adaptor.console.api`).
API_PREFIX = f"{URL_PREFIX}/api/"
#: The header a session-authenticated API call carries its CSRF token in.
CSRF_HEADER = "X-CSRF-Token"
#: Console times are shown in the operators' time, with UTC beside.
LOCAL_TIME = ZoneInfo("Europe/London")
#: Console forms are a few fields: a bigger body is refused before it is parsed.
MAX_FORM_BYTES = 64 * 1024

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)

#: States whose value alone does not say enough to an operator.
_NAMED = {Status.UNMATCHED: "Nullification unmatched"}


def status_label(status: Status) -> str:
    """A state as the console names it: its value in words (``dead_letter``: "Dead letter"), so that a state
    added to :class:`~adaptor.store.Status` shows in the tabs and filters without a change here."""
    return _NAMED.get(status) or status.value.replace("_", " ").capitalize()


STATUS_LABELS = {status: status_label(status) for status in Status}

_LOGIN_ERROR = "The user name or password is not right."
#: The session keys a sign-in sets (besides the CSRF token, which a signed-out session keeps for the login form).
_SIGN_IN_KEYS = ("user", "kind", "fp", "at", "sid")

#: What :func:`signed_in_user` says when nobody is signed in.
_NOBODY = "-"

blueprint = Blueprint(
    "console",
    __name__,
    url_prefix=URL_PREFIX,
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)


# -- every request ---------------------------------------------------------------------------------------------


@blueprint.before_request
def start_clock() -> None:
    g.console_started = time.perf_counter()
    g.identity = None
    g.bearer = False
    request.max_content_length = MAX_FORM_BYTES


@blueprint.before_request
def authenticate() -> BaseResponse | None:
    if request.endpoint == "console.static":
        return None
    token = bearer_token(request)
    if token is not None:
        return _authenticate_bearer(token)
    g.identity = _session_identity()
    if request.method == "POST" and not _post_allowed():
        return _error_page(
            403,
            "This form has expired",
            "The form was not sent from this console or your session has changed. Go back, reload the page "
            "and try again.",
        )
    if g.identity is None and request.endpoint != "console.login":
        if is_api_request():
            return _error_page(401, "Not signed in", "Send the console token as a bearer token, or sign in.")
        return see_other("console.login")
    return None


def _authenticate_bearer(token: str) -> Response | None:
    """A script: the token on every request, no cookie, so no CSRF check is needed (browsers never add an
    Authorization header to a cross-site request on their own)."""
    console = console_state()
    refused = _refused_while_throttled()
    if refused is not None:
        return refused
    identity = console.credentials.check_token(token)
    if identity is None:
        console.throttle.failed(_client())
        response = _error_page(401, "Not signed in", "The bearer token was not accepted.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="nhs111 console"'
        return response
    g.identity, g.bearer = identity, True
    return None


def _session_identity() -> Identity | None:
    user, kind, fingerprint = session.get("user"), session.get("kind"), session.get("fp")
    signed_in_at, session_id = session.get("at"), session.get("sid")
    # A session without an id (made before sign-outs were revoked on the server) is not accepted either.
    if not (
        isinstance(user, str) and isinstance(kind, str) and isinstance(fingerprint, str) and isinstance(session_id, str)
    ):
        return None
    console = console_state()
    identity = console.credentials.identity(user, kind)
    fresh = isinstance(signed_in_at, (int, float)) and 0 <= time.time() - signed_in_at < console.session_seconds
    if fresh and session_id not in console.signed_out and console.credentials.still_valid(identity, fingerprint):
        return identity
    for key in _SIGN_IN_KEYS:  # expired, signed out, or the credential changed: sign out
        session.pop(key, None)
    return None


def _post_allowed() -> bool:
    """A POST made with the session cookie: from this console, and carrying the session's CSRF token (a form
    field; for the API, the ``X-CSRF-Token`` header, which no cross-site form can set)."""
    sent = request.headers.get(CSRF_HEADER) if is_api_request() else request.form.get("csrf_token")
    return same_origin(request) and csrf_matches(session.get("csrf"), sent)


def is_api_request() -> bool:
    """Whether this request is for the JSON API (answered in JSON, errors included)."""
    return request.path.startswith(API_PREFIX)


@blueprint.after_request
def finish(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"
    _log_access(response.status_code)
    return response


def failed(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        code = error.code or 500
        return _error_page(code, error.name, error.description or "")
    if isinstance(error, StoreError):
        log.error("console: message store unavailable: %s", error)
        return _error_page(503, "Message store unavailable", "The message store cannot be read. Try again.")
    error_id = log_internal_error(log, "console: internal error", error)
    return _error_page(500, "Something went wrong", f"The error was logged with id {error_id}.")


# Flask looks for a handler of the status code (the site's, for 404 and 405) before one of the class: the console's
# own are registered by code too, so that its errors are its own pages (and the API's are JSON).
blueprint.register_error_handler(Exception, failed)
for _code in (400, 401, 403, 404, 405, 413, 429):
    blueprint.register_error_handler(_code, failed)


# -- what every template may use -------------------------------------------------------------------------------


@blueprint.app_template_global()
def csrf_token() -> str:
    if g.get("bearer"):
        return ""  # a bearer request needs none, and must not be handed a session cookie
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = new_csrf_token()
    return token


@blueprint.context_processor
def page_globals() -> dict[str, Any]:
    identity: Identity | None = g.get("identity")
    return {
        "identity": identity,
        "bearer": g.get("bearer", False),
        "may_replay": identity is not None and identity.may_replay,
        "status_labels": STATUS_LABELS,
        "statuses": list(Status),
    }


@blueprint.app_template_filter("when")
def when(value: datetime | None) -> str:
    """A time in Europe/London (GMT or BST, said), with UTC beside when they differ."""
    if value is None:
        return ""
    local = value.astimezone(LOCAL_TIME)
    utc = value.astimezone(UTC)
    shown = local.strftime("%Y-%m-%d %H:%M:%S %Z")
    return shown if local.utcoffset() == utc.utcoffset() else f"{shown} ({utc:%H:%M} UTC)"


@blueprint.app_template_filter("nhs_number")
def nhs_number(value: str) -> str:
    """An NHS number as it is written: ``999 000 1235``."""
    return f"{value[:3]} {value[3:6]} {value[6:]}" if len(value) == 10 and value.isdigit() else value


@blueprint.app_template_filter("birth_date")
def birth_date(value: str) -> str:
    """A date of birth as ``17-Oct-1942`` (the NHS's way, which no reader takes for a US date)."""
    try:
        return datetime.strptime(value, "%Y-%m-%d").strftime("%d-%b-%Y")
    except ValueError:
        return value


@blueprint.app_template_filter("when_utc")
def when_utc(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


blueprint.add_app_template_filter(interaction_name)


# -- signing in and out ----------------------------------------------------------------------------------------


@blueprint.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str:
    console = console_state()
    if request.method == "GET":
        if g.identity is not None:
            return see_other("console.messages")
        return render_template("login.html", token_login=console.credentials.has_token, error=None)

    refused = _refused_while_throttled()
    if refused is not None:
        return refused
    user = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    # No user name: the password field carries the token.
    credentials = console.credentials
    identity = credentials.check_password(user, password) if user else credentials.check_token(password.strip())
    if identity is None:
        console.throttle.failed(_client())
        log.info("console: sign-in refused for %s", "the token" if not user else "a user name or password")
        return _page(401, "login.html", token_login=credentials.has_token, error=_LOGIN_ERROR)
    console.throttle.succeeded(_client())
    fingerprint = credentials.fingerprint(identity)
    # A new session on sign-in: nothing set before it (a planted cookie, say) carries over.
    session.clear()
    session.update(user=identity.user, kind=identity.kind, fp=fingerprint, at=time.time(), sid=new_session_id())
    session["csrf"] = new_csrf_token()
    g.identity = identity
    log.info("console: %s signed in", identity.user)
    return see_other("console.messages")


@blueprint.post("/logout")
def logout() -> BaseResponse:
    if g.identity is not None:
        # Revoked on the server too: a copy of the cookie taken before is refused from now on.
        console = console_state()
        console.signed_out.revoke(session["sid"], session["at"] + console.session_seconds)
        log.info("console: %s signed out", g.identity.user)
    session.clear()
    flash("You are signed out.", "info")
    return see_other("console.login")


# -- helpers for the console's views ---------------------------------------------------------------------------


def signed_in_user() -> str:
    """The user name of this request's operator, ``-`` before (or without) a sign-in."""
    identity: Identity | None = g.get("identity")
    return identity.user if identity is not None else _NOBODY


def see_other(endpoint: str, **values: Any) -> BaseResponse:
    """A ``303 See Other`` to a console page: after a form, the browser loads the page with a GET."""
    return redirect(url_for(endpoint, **values), code=303)


def _client() -> str:
    """The address the sign-in throttle counts failures against."""
    return request.remote_addr or _NOBODY


def _refused_while_throttled() -> Response | None:
    """The 429 page while this client has failed to sign in too often, else ``None``."""
    retry_after = console_state().throttle.retry_after(_client())
    if not retry_after:
        return None
    minutes = max(1, math.ceil(retry_after / 60))
    response = _error_page(
        429, "Too many attempts", f"Too many failed sign-in attempts from your address. Try again in {minutes} min."
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _error_page(code: int, title: str, text: str) -> Response:
    if is_api_request():
        response = jsonify(error=title, detail=text)
        response.status_code = code
        return response
    return _page(code, "error.html", code=code, title=title, text=text)


def require_replay() -> None:
    """Refuse (403) an operator who may only read (``PEM111_CONSOLE_READ_ONLY_USERS``)."""
    identity: Identity | None = g.get("identity")
    if identity is None or not identity.may_replay:
        abort(403, description="Your console role may look at messages but not replay them.")


def _page(status: int, template: str, **context: Any) -> Response:
    return Response(render_template(template, **context), status=status)


def _log_access(status: int) -> None:
    started = g.get("console_started")
    elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    rule = request.url_rule.rule if request.url_rule is not None else "-"
    access_log.info("%s %s %d %.1f ms user=%s", request.method, rule, status, elapsed, signed_in_user())
