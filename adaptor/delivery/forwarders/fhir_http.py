"""``http://`` / ``https://``: POST each Bundle to a FHIR endpoint.

One request per message: ``POST <PEM111_FORWARD_TARGET>`` with the Bundle bytes exactly as converted,
``Content-Type: application/fhir+json; charset=utf-8``, the envelope facts as ``X-*`` headers (see
:data:`PROPERTY_HEADERS`), the extra headers of ``PEM111_FHIR_HEADERS`` and ``Authorization: Bearer`` when
``PEM111_FHIR_BEARER_TOKEN`` is set. Over https the server is verified against ``PEM111_FHIR_CA_BUNDLE`` (else
the system trust store) and ``PEM111_FHIR_CLIENT_CERT``/``PEM111_FHIR_CLIENT_KEY`` are presented for mutual TLS.

How the answer is classified (the outbox retries transient failures with backoff, dead-letters permanent ones):

==========================================  =====================================================================
2xx                                         delivered
408, 425, 429                               transient: the receiver asks us to come back later
other 4xx                                   permanent (:class:`HttpRejectedError`): this Bundle will never do
3xx                                         permanent: redirects are not followed; the target URL is wrong
5xx, anything else                          transient (:class:`HttpStatusError`)
timeouts, refused/reset connections, TLS    transient: the network or the configuration may be fixed without
                                            the message changing (a rejected client certificate included)
no complete answer once the POST was sent   transient and *in doubt* (:class:`InDoubtDeliveryError`): a read
                                            timeout, a connection closed or reset before or while answering
==========================================  =====================================================================

The client is urllib3 (already installed as the transport underneath ``requests``/zeep): its ``PoolManager``
is documented thread-safe and keeps connections alive between messages, whereas a ``requests.Session`` is not
documented thread-safe and would add redirect and environment-proxy behaviour we would have to switch off.
Nothing here retries: one :meth:`FhirHttpForwarder.send` is one attempt, so the outbox's attempt count and
backoff are the whole retry policy. A retried POST may reach a receiver that had in fact processed the first
one (e.g. the answer was lost to a timeout), so receivers should deduplicate on ``X-Message-Id`` or Bundle.id.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import string
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import SSLError as Urllib3SslError

from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import (
    CHECK_TIMEOUT_SECONDS,
    FHIR_JSON,
    Delivery,
    DeliveryError,
    InDoubtDeliveryError,
    PermanentDeliveryError,
)

log = logging.getLogger("adaptor.forwarders.fhir_http")  # pinned: the JSON log format names it

#: The :meth:`Delivery.properties` as HTTP headers: the reference's property names in HTTP's usual hyphenated
#: form (header names are case-insensitive, so ``x-messageid`` reads the same header). Lists (several ODS codes
#: or DoS ids) are comma-separated, as in the broker properties.
PROPERTY_HEADERS: Mapping[str, str] = {
    "messageId": "X-Message-Id",
    "trackingId": "X-Tracking-Id",
    "interaction": "X-Interaction",
    "odsCode": "X-Ods-Code",
    "dosServiceId": "X-Dos-Service-Id",
    "bundleVersion": "X-Bundle-Version",
}

#: Statuses that mean "not now" rather than "not this": Request Timeout, Too Early, Too Many Requests.
TRANSIENT_4XX = frozenset({408, 425, 429})

#: Headers the forwarder owns: a configured value would corrupt the request or misattribute the message.
_RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "transfer-encoding", "host", "connection"}
    | {name.lower() for name in PROPERTY_HEADERS.values()}
)
#: How much of a response body is read at most; the rest is dropped with the connection.
_MAX_RESPONSE_BYTES = 64 * 1024
#: How much of a refusal's body the error message quotes.
_MAX_DETAIL_CHARS = 200
#: RFC 9110 token characters: what a header name may contain.
_TOKEN_CHARACTERS = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~")
#: Printable ASCII except ``%``: property values made of these are sent unchanged (see :func:`_header_value`).
_SAFE_VALUE_CHARACTERS = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


class HttpStatusError(DeliveryError):
    """The endpoint answered with a status that is not success; transient unless :class:`HttpRejectedError`."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}" + (f": {detail}" if detail else ""))
        self.summary = f"HTTP {status}"  # the detail quotes the receiver's reply: history only, not logs
        self.status = status
        self.detail = detail


class HttpRejectedError(HttpStatusError, PermanentDeliveryError):
    """The endpoint refused this Bundle (4xx other than 408/425/429, or a redirect): do not retry."""


class FhirHttpForwarder:
    """POSTs each Bundle to one FHIR endpoint over a pool of kept-alive connections. Thread-safe.

    Everything configurable is checked here, once, so that a bad certificate path or header fails the start-up
    with a :class:`ConfigError` naming the variable instead of failing every delivery as a transient error.
    """

    def __init__(self, settings: Settings) -> None:
        url = settings.resolved_forward_target
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"PEM111_FORWARD_TARGET {_without_secrets(url)!r} is not an http(s):// URL with a host")
        try:
            parts.port  # noqa: B018 - urlsplit validates the port lazily, on access
        except ValueError:
            raise ConfigError(f"PEM111_FORWARD_TARGET {_without_secrets(url)!r} has an invalid port") from None

        netloc = parts.netloc.rpartition("@")[2]
        #: The URL requests go to: credentials moved into a header, fragment dropped, query kept.
        self.url = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
        #: For logs and the delivery history: no user, password or query string (which may hold an API key).
        self.target = urlunsplit((scheme, netloc, parts.path or "/", "", ""))

        headers = {
            "Content-Type": f"{FHIR_JSON}; charset=utf-8",
            "Accept": FHIR_JSON,
            "User-Agent": "nhs111-adaptor",
        }
        for name, value in settings.fhir_headers:
            _check_header("PEM111_FHIR_HEADERS", name, value)
            if name.lower() in _RESERVED_HEADERS:
                raise ConfigError(f"PEM111_FHIR_HEADERS must not set {name}: the forwarder sets it per message")
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()} | {name: value}
        configured_authorization = any(name.lower() == "authorization" for name in headers)
        if parts.username is not None or parts.password is not None:
            if settings.fhir_bearer_token or configured_authorization:
                raise ConfigError(
                    "PEM111_FORWARD_TARGET has user:password@ and PEM111_FHIR_BEARER_TOKEN or an Authorization "
                    "header is also set: configure one way to authenticate"
                )
            credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            headers.update(urllib3.make_headers(basic_auth=credentials))
        if settings.fhir_bearer_token:
            if configured_authorization:
                raise ConfigError("PEM111_FHIR_HEADERS sets Authorization and PEM111_FHIR_BEARER_TOKEN is also set")
            _check_header("PEM111_FHIR_BEARER_TOKEN", "Authorization", settings.fhir_bearer_token)
            headers["Authorization"] = f"Bearer {settings.fhir_bearer_token}"
        self._headers: Mapping[str, str] = headers

        tls = settings.fhir_client_cert or settings.fhir_client_key or settings.fhir_ca_bundle
        authenticated = any(name.lower() == "authorization" for name in headers)
        if scheme == "http" and (tls or authenticated):
            # Not an error (a test endpoint may be plain http), but credentials sent in clear deserve a word.
            log.warning(
                "FHIR target %s is plain http: TLS settings are ignored and credentials go unencrypted", self.target
            )
        # For check(): where a connection goes, and how it is secured.
        self._address = (parts.hostname, parts.port or (443 if scheme == "https" else 80))
        self._timeout = settings.fhir_timeout_seconds
        self._tls_context = _ssl_context(settings) if scheme == "https" else None
        # One connection per thread that may send at once (outbox workers, or server threads in sync mode);
        # block=False lets a burst open extra connections rather than wait, and those are closed after use.
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=max(settings.delivery_workers, settings.server_threads, 1),
            block=False,
            # Bounds the connect (TCP and TLS) and each wait for response bytes, not the request as a whole.
            timeout=urllib3.Timeout(connect=settings.fhir_timeout_seconds, read=settings.fhir_timeout_seconds),
            retries=False,
            ssl_context=self._tls_context,
        )

    def send(self, delivery: Delivery) -> None:
        """POST the Bundle; return on 2xx, raise :class:`DeliveryError` (permanent for refusals) otherwise."""
        headers = dict(self._headers)
        for prop, value in delivery.properties().items():
            headers[PROPERTY_HEADERS.get(prop, f"X-{prop}")] = _header_value(value)
        started = time.monotonic()
        try:
            response = self._pool.request(
                "POST",
                self.url,
                body=delivery.bundle_json,
                headers=headers,
                redirect=False,
                preload_content=False,
            )
        except (Urllib3Error, OSError) as exc:
            if _before_sending(exc):  # refused, unreachable, connect timeout, TLS handshake or verification
                raise DeliveryError(f"POST {self.target} failed: {_describe_network_error(exc)}") from exc
            # A read timeout, or the connection closed or reset before the answer: the receiver may have processed
            # the POST after all. Retrying is still right (receivers deduplicate); the store counts the copy.
            raise InDoubtDeliveryError(
                f"POST {self.target}: no answer after the request was sent, so it may have been delivered "
                f"({_describe_network_error(exc)})"
            ) from exc
        try:
            status = response.status
            body = _read_bounded(response)
        except (Urllib3Error, OSError) as exc:
            raise InDoubtDeliveryError(
                f"POST {self.target} failed reading the response ({type(exc).__name__}), so it may have been delivered"
            ) from exc
        finally:
            response.release_conn()
        log.debug(
            "FHIR POST answered",
            extra={
                "target": self.target,
                "message_id": delivery.message_id,
                "status": status,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            location = _without_secrets(response.headers.get("Location", ""))
            raise HttpRejectedError(
                status,
                f"redirect to {location or '(no Location)'} not followed: set PEM111_FORWARD_TARGET to the final URL",
            )
        detail = _response_detail(body, response.headers.get("Content-Type", ""))
        if 400 <= status < 500 and status not in TRANSIENT_4XX:
            raise HttpRejectedError(status, detail)
        retry_after = response.headers.get("Retry-After", "").strip()
        if retry_after:
            detail = f"Retry-After {retry_after[:40]}" + (f"; {detail}" if detail else "")
        raise HttpStatusError(status, detail)

    def close(self) -> None:
        """Close the pooled connections; the next :meth:`send` opens new ones."""
        self._pool.clear()

    def check(self) -> None:
        """Open a TCP connection to the endpoint and, for https, complete the TLS handshake (server certificate
        and host name verified, client certificate offered) as a send would; raise :class:`DeliveryError` when
        that fails.

        No HTTP request: what OPTIONS or HEAD answer says little about whether a POST would be taken (405 and 401
        are common), and some endpoints log or bill every request; the connection is the part that breaks.
        """
        host, port = self._address
        timeout = min(self._timeout, CHECK_TIMEOUT_SECONDS)
        try:
            with socket.create_connection((host, port), timeout=timeout) as connection:
                if self._tls_context is not None:
                    with self._tls_context.wrap_socket(connection, server_hostname=host):
                        pass
        except OSError as exc:  # refused, unreachable, timed out, TLS failures (ssl.SSLError is an OSError)
            raise DeliveryError(f"cannot connect to {self.target}: {type(exc).__name__}: {exc}") from exc


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    """Server verification (CA bundle, else the system store) and the client certificate, loaded once now."""
    try:
        context = ssl.create_default_context(cafile=settings.fhir_ca_bundle or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"PEM111_FHIR_CA_BUNDLE {settings.fhir_ca_bundle!r} cannot be loaded: {exc}") from None
    if settings.fhir_client_key and not settings.fhir_client_cert:
        raise ConfigError("PEM111_FHIR_CLIENT_KEY is set but PEM111_FHIR_CLIENT_CERT is not")
    if settings.fhir_client_cert:
        try:
            # The key may sit in the certificate file, so PEM111_FHIR_CLIENT_KEY is optional.
            context.load_cert_chain(settings.fhir_client_cert, settings.fhir_client_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"PEM111_FHIR_CLIENT_CERT {settings.fhir_client_cert!r} / PEM111_FHIR_CLIENT_KEY "
                f"{settings.fhir_client_key!r} cannot be loaded (PEM certificate and unencrypted key): {exc}"
            ) from None
    return context


def _check_header(variable: str, name: str, value: str) -> None:
    """Refuse a header http.client would reject at send time (or that could split the request)."""
    if not name or not set(name) <= _TOKEN_CHARACTERS:
        raise ConfigError(f"{variable}: {name!r} is not a valid HTTP header name")
    if any(c in value for c in "\r\n\0") or not value.isascii():
        raise ConfigError(f"{variable}: the value of {name} must be printable ASCII on one line")


def _header_value(value: str) -> str:
    """``value`` unchanged when it is printable ASCII without ``%``; otherwise percent-encoded UTF-8.

    The values come from the sender's envelope. They are UUIDs, URNs, ODS codes and digits in practice, but a
    control character would let a sender inject headers and a non-ASCII one would fail every attempt.
    """
    return quote(value, safe=_SAFE_VALUE_CHARACTERS)


def _read_bounded(response: urllib3.BaseHTTPResponse) -> bytes:
    """Up to :data:`_MAX_RESPONSE_BYTES` of the body; a longer body's connection is closed, not reused."""
    body = response.read(_MAX_RESPONSE_BYTES)
    if response.read(1):
        # Reading on could take as long as the server likes; drop the connection instead of draining it.
        response.close()
    return body


def _response_detail(body: bytes, content_type: str) -> str:
    """A short, one-line account of a refusal: OperationOutcome issues if there are any, else the body's start.

    Only ever the response: the request body (the patient's record) never appears in errors or logs.
    """
    text = body.decode("utf-8", errors="replace")
    if "json" in content_type.lower() or text.lstrip().startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("resourceType") == "OperationOutcome":
            issues = parsed.get("issue")
            described = [_describe_issue(i) for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []
            text = "OperationOutcome: " + "; ".join(d for d in described if d)
    return _shorten(" ".join(text.split()))


def _describe_issue(issue: Mapping[str, object]) -> str:
    details = issue.get("details")
    details_text = details.get("text") if isinstance(details, dict) else None
    words = [issue.get("severity"), issue.get("code"), issue.get("diagnostics") or details_text]
    return " ".join(str(word) for word in words if word)


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_DETAIL_CHARS else text[: _MAX_DETAIL_CHARS - 1] + "…"


def _before_sending(exc: BaseException) -> bool:
    """Whether ``exc`` ended the POST before any of it was sent: no connection, or the server's certificate
    refused. Anything else may have come after the request was written (with TLS 1.3 a server refuses a client
    certificate only after the client has sent its request), so it is in doubt: an upper bound."""
    if isinstance(exc, ConnectTimeoutError):  # NewConnectionError and NameResolutionError among them
        return True
    if isinstance(exc, Urllib3SslError):  # the server's certificate refused: the handshake never completed
        reasons = (exc.__cause__, exc.__context__, *exc.args)
        return any(isinstance(reason, ssl.SSLCertVerificationError) for reason in reasons)
    return False


def _describe_network_error(exc: BaseException) -> str:
    """The error's class and its innermost reason, without the URL's query (urllib3 messages quote the URL)."""
    reason = getattr(exc, "reason", None) or exc.__cause__ or exc.__context__
    if isinstance(reason, BaseException) and reason is not exc:
        return f"{type(exc).__name__} ({type(reason).__name__}: {_shorten(str(reason))})"
    return f"{type(exc).__name__}: {_shorten(str(exc))}"


def _without_secrets(url: str) -> str:
    """``url`` without user, password, query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparseable URL)"
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
