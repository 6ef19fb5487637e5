"""The console's pages and forms: one Flask blueprint, server-rendered, usable without JavaScript.

Data flows one way: pages read the store; the two replay forms ask the store to queue messages again and wake
the outbox workers (the same as ``nhs111 replay``). Nothing here converts, delivers or edits a message.

Every request passes, in order: the access-log clock, authentication (session cookie or bearer token), and for
a POST made with a session cookie the Origin/Referer and CSRF checks. Every response gets the security headers;
pages are never cached (they show patient data).
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from adaptor.config import Settings
from adaptor.console.auth import (
    Credentials,
    Identity,
    LoginThrottle,
    bearer_token,
    csrf_matches,
    new_csrf_token,
    same_origin,
)
from adaptor.console.cda_text import readable_document
from adaptor.delivery.conversion import ConversionError, convert
from adaptor.store import MessageQuery, MessageStore, Status, StoredMessage, StoreError

log = logging.getLogger("adaptor.console")
#: One line per console request: method, route template, status, duration, user. Never a query string or a
#: path value: search terms can be NHS numbers or names.
access_log = logging.getLogger("adaptor.console.access")

URL_PREFIX = "/console"
PAGE_SIZE = 25
RECENT_REJECTIONS = 5
#: Console forms are a few fields: a bigger body is refused before it is parsed.
MAX_FORM_BYTES = 64 * 1024
#: The longest search text used (MessageIDs and trackingids are UUIDs; ODS codes are shorter still).
MAX_SEARCH = 200

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
)

STATUS_LABELS = {
    Status.PENDING: "Pending",
    Status.DELIVERING: "Delivering",
    Status.RETRYING: "Retrying",
    Status.HELD: "Held",
    Status.DELIVERED: "Delivered",
    Status.DEAD_LETTER: "Dead letter",
}

INTERACTION_PREFIX = "urn:nhs-itk:interaction:"


def create_blueprint(
    settings: Settings,
    *,
    store: MessageStore,
    wake: Callable[[], None],
    credentials: Credentials,
    throttle: LoginThrottle | None = None,
) -> Blueprint:
    """The console blueprint (mounted at :data:`URL_PREFIX`), reading ``store`` and waking the outbox with
    ``wake`` after a replay."""
    console = Blueprint(
        "console",
        __name__,
        url_prefix=URL_PREFIX,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    throttle = throttle or LoginThrottle()
    session_seconds = settings.console_session_hours * 3600

    # -- every request ---------------------------------------------------------------------------------------

    @console.before_request
    def start_clock() -> None:
        g.console_started = time.perf_counter()
        g.identity = None
        g.bearer = False
        request.max_content_length = MAX_FORM_BYTES

    @console.before_request
    def authenticate() -> BaseResponse | None:
        if request.endpoint == "console.static":
            return None
        client = request.remote_addr or "-"
        token = bearer_token(request)
        if token is not None:
            # A script: the token on every request, no cookie, so no CSRF check is needed (browsers never add
            # an Authorization header to a cross-site request on their own).
            if throttle.retry_after(client):
                return _too_many(throttle.retry_after(client))
            identity = credentials.check_token(token)
            if identity is None:
                throttle.failed(client)
                response = _error_page(401, "Not signed in", "The bearer token was not accepted.")
                response.headers["WWW-Authenticate"] = 'Bearer realm="nhs111 console"'
                return response
            g.identity, g.bearer = identity, True
            return None

        g.identity = _session_identity()
        if request.method == "POST" and not _post_allowed():
            return _error_page(
                403,
                "This form has expired",
                "The form was not sent from this console or your session has changed. Go back, reload the page "
                "and try again.",
            )
        if g.identity is None and request.endpoint != "console.login":
            return redirect(url_for("console.login"), code=303)
        return None

    def _session_identity() -> Identity | None:
        user, kind, fingerprint = session.get("user"), session.get("kind"), session.get("fp")
        signed_in_at = session.get("at")
        if not (isinstance(user, str) and isinstance(kind, str) and isinstance(fingerprint, str)):
            return None
        identity = Identity(user, kind)
        fresh = isinstance(signed_in_at, (int, float)) and 0 <= time.time() - signed_in_at < session_seconds
        if fresh and credentials.still_valid(identity, fingerprint):
            return identity
        for key in ("user", "kind", "fp", "at"):  # expired, or the credential changed: sign out
            session.pop(key, None)
        return None

    def _post_allowed() -> bool:
        return same_origin(request) and csrf_matches(session.get("csrf"), request.form.get("csrf_token"))

    @console.after_request
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

    @console.errorhandler(Exception)
    def failed(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            code = error.code or 500
            return _error_page(code, error.name, error.description or "")
        if isinstance(error, StoreError):
            log.error("console: message store unavailable: %s", error)
            return _error_page(503, "Message store unavailable", "The message store cannot be read. Try again.")
        error_id = str(uuid.uuid4()).upper()
        # The exception text may quote message content: the type here, the traceback only at DEBUG.
        log.error("console: internal error error_id=%s: %s", error_id, type(error).__name__)
        log.debug("console internal error error_id=%s", error_id, exc_info=error)
        return _error_page(500, "Something went wrong", f"The error was logged with id {error_id}.")

    @console.app_template_global()
    def csrf_token() -> str:
        if g.get("bearer"):
            return ""  # a bearer request needs none, and must not be handed a session cookie
        token = session.get("csrf")
        if not isinstance(token, str):
            token = session["csrf"] = new_csrf_token()
        return token

    @console.context_processor
    def page_globals() -> dict[str, Any]:
        return {
            "identity": g.get("identity"),
            "bearer": g.get("bearer", False),
            "status_labels": STATUS_LABELS,
            "statuses": list(Status),
        }

    @console.app_template_filter("when")
    def when(value: datetime | None) -> str:
        return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @console.app_template_filter("interaction_name")
    def interaction_name(value: str) -> str:
        return value.removeprefix(INTERACTION_PREFIX)

    # -- signing in and out ----------------------------------------------------------------------------------

    @console.route("/login", methods=["GET", "POST"])
    def login() -> BaseResponse | str:
        if g.identity is not None and request.method == "GET":
            return redirect(url_for("console.messages"), code=303)
        if request.method == "GET":
            return render_template("login.html", token_login=credentials.has_token, error=None)

        client = request.remote_addr or "-"
        wait = throttle.retry_after(client)
        if wait:
            return _too_many(wait)
        user = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        # No user name: the password field carries the token.
        identity = credentials.check_password(user, password) if user else credentials.check_token(password.strip())
        if identity is None:
            throttle.failed(client)
            log.info("console: sign-in refused for %s", "the token" if not user else "a user name or password")
            page = render_template("login.html", token_login=credentials.has_token, error=_LOGIN_ERROR)
            return Response(page, status=401)
        throttle.succeeded(client)
        fingerprint = credentials.fingerprint(identity)
        # A new session on sign-in: nothing set before it (a planted cookie, say) carries over.
        session.clear()
        session.update(user=identity.user, kind=identity.kind, fp=fingerprint, at=time.time())
        session["csrf"] = new_csrf_token()
        g.identity = identity
        log.info("console: %s signed in", identity.user)
        return redirect(url_for("console.messages"), code=303)

    @console.post("/logout")
    def logout() -> BaseResponse:
        if g.identity is not None:
            log.info("console: %s signed out", g.identity.user)
        session.clear()
        flash("You are signed out.", "info")
        return redirect(url_for("console.login"), code=303)

    # -- pages -----------------------------------------------------------------------------------------------

    @console.get("/")
    def home() -> BaseResponse:
        return redirect(url_for("console.messages"), code=303)

    @console.get("/messages")
    def messages() -> str:
        status_value = request.args.get("status", "")
        status = Status(status_value) if status_value in {s.value for s in Status} else None
        search = request.args.get("q", "").strip()[:MAX_SEARCH]
        where = MessageQuery(statuses=(status,) if status else (), search=search or None)
        total = store.count_messages(where)
        pages = max(1, math.ceil(total / PAGE_SIZE))
        page = min(_page_number(), pages)
        rows = store.list_messages(where=where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        counts = store.count_by_status()
        rejected = store.count_rejections()
        accepted = sum(counts.values())
        counters = {
            "received": accepted + rejected,
            "accepted": accepted,
            "rejected": rejected,
            "delivered": counts[Status.DELIVERED],
            "dead_letter": counts[Status.DEAD_LETTER],
        }
        return render_template(
            "messages.html",
            rows=rows,
            total=total,
            page=page,
            pages=pages,
            status=status,
            search=search,
            counts=counts,
            counters=counters,
            rejections=store.list_rejections(limit=RECENT_REJECTIONS),
        )

    @console.get("/messages/<key>")
    def message(key: str) -> BaseResponse | str:
        found = _find(key)
        if len(found) > 1:
            return render_template("choose.html", key=key, records=found)
        record = found[0]
        return render_template(
            "message.html",
            message=record,
            history=store.delivery_history(record.id),
            document=readable_document(record.raw or b""),
            bundle=_bundle_view(record),
        )

    def _find(key: str) -> list[StoredMessage]:
        """The record with this id, else every record with this MessageID; 404 when there is none."""
        record = store.get(key)
        found = [record] if record is not None else store.find_by_message_id(key)
        if not found:
            abort(404, description="No stored message has this record id or MessageID.")
        return found

    def _bundle_view(record: StoredMessage) -> dict[str, str | None]:
        """The stored Bundle pretty-printed; before the first delivery attempt (or after a replay) a preview
        converted now, said to be one (its ids and times differ from what will be delivered)."""
        if record.bundle is not None:
            try:
                return {"text": json.dumps(json.loads(record.bundle), indent=2, ensure_ascii=False), "note": None}
            except ValueError:
                return {"text": record.bundle, "note": "The stored Bundle is not valid JSON; shown as stored."}
        try:
            preview = convert(record.raw or b"", config=settings.replace(validate_fhir=False))
        except ConversionError as exc:
            return {"text": None, "note": f"The request cannot be converted: {exc}"}
        return {
            "text": json.dumps(preview, indent=2, ensure_ascii=False),
            "note": "Preview: no Bundle is stored yet (it is converted when delivered), so ids and times differ "
            "from the Bundle that will be delivered.",
        }

    @console.get("/rejections")
    def rejections() -> str:
        total = store.count_rejections()
        pages = max(1, math.ceil(total / PAGE_SIZE))
        page = min(_page_number(), pages)
        rows = store.list_rejections(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
        return render_template("rejections.html", rows=rows, total=total, page=page, pages=pages)

    # -- actions ---------------------------------------------------------------------------------------------

    @console.post("/messages/<record_id>/replay")
    def replay_message(record_id: str) -> BaseResponse:
        results = store.replay([record_id])
        if not results:
            abort(404, description="No stored message has this record id.")
        [result] = results
        user = g.identity.user if g.identity else "-"
        if result.requeued:
            log.info(
                "console: %s replayed record=%s message_id=%s (was %s)",
                user,
                record_id,
                result.message_id,
                result.previous.value,
            )
            wake()
            flash(f"Queued for delivery again (it was {STATUS_LABELS[result.previous].lower()}).", "success")
        else:
            flash("Not queued: the message is being delivered right now.", "error")
        return redirect(url_for("console.message", key=record_id), code=303)

    @console.post("/dead-letters/replay")
    def replay_dead_letters() -> BaseResponse:
        results = store.replay(store.record_ids(Status.DEAD_LETTER))
        queued = sum(1 for result in results if result.requeued)
        user = g.identity.user if g.identity else "-"
        log.info("console: %s replayed %d dead-lettered message(s)", user, queued)
        if queued:
            wake()
        flash(f"{queued} dead-lettered message(s) queued for delivery again.", "success" if queued else "info")
        return redirect(url_for("console.messages"), code=303)

    return console


_LOGIN_ERROR = "The user name or password is not right."


def _page_number() -> int:
    try:
        return max(1, int(request.args.get("page", "1")))
    except ValueError:
        return 1


def _too_many(retry_after: int) -> Response:
    minutes = max(1, math.ceil(retry_after / 60))
    response = _error_page(
        429, "Too many attempts", f"Too many failed sign-in attempts from your address. Try again in {minutes} min."
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _error_page(code: int, title: str, text: str) -> Response:
    return Response(render_template("error.html", code=code, title=title, text=text), status=code)


def _log_access(status: int) -> None:
    started = g.get("console_started")
    elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    rule = request.url_rule.rule if request.url_rule is not None else "-"
    identity = g.get("identity")
    access_log.info(
        "%s %s %d %.1f ms user=%s", request.method, rule, status, elapsed, identity.user if identity else "-"
    )
