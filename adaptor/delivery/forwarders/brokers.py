"""Where the AMQP brokers are: ``PEM111_AMQP_BROKER`` (or ``PEM111_FORWARD_TARGET``) read into broker endpoints.

Shared by both AMQP forwarders. The value is one broker URL or several, in any of the forms a reference deployment
may use (the reference is a Qpid JMS client, so its URIs are Qpid JMS URIs)::

    amqp://mq.example:5672                                       one broker
    amqps://mq-a.example:5671,amqps://mq-b.example:5671          a list, tried in turn
    failover:(amqp://mq-a.example:5672,amqp://mq-b.example:5672)?failover.maxReconnectAttempts=20

The forwarders try the brokers in turn, starting with the one they last connected to, and the first that accepts
the connection takes the message; when none does, the send fails and the outbox tries again after its backoff.
So the outbox's backoff and attempt limit, not Qpid's ``failover.*`` reconnect settings, decide when to try again.

Query options (on one URL, on the ``failover:(...)`` list, or for every URL as ``failover.nested.NAME``) are
checked one by one, so that nothing an operator relies on is dropped silently:

- honoured: ``jms.username`` and ``jms.password`` (credentials, as if written in the URL);
- accepted and not used: Qpid's reconnect timing (:data:`RECONNECT_OPTIONS`), the JMS client's own settings
  (``jms.*``: a presettle policy, say, which would make a JMS producer send at most once; every send here waits
  for the broker to accept the message) and socket tuning (:data:`TUNING_OPTIONS`): they change how a JMS client
  waits, retries or buffers, never where a message goes or how the connection is secured. The forwarders log
  their names once;
- anything else, notably the Java key and trust stores, host verification turned off, SASL and virtual-host
  choices, and AMQP over WebSockets (``amqpws://``, ``amqpwss://``: neither python-qpid-proton nor pika speak it),
  stops start-up with a :class:`ConfigError` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import CHECK_TIMEOUT_SECONDS, DeliveryError

T = TypeVar("T")

#: A reachability check tries every broker of a list within about CHECK_TIMEOUT_SECONDS, but gives each at least this.
MIN_CHECK_SECONDS_PER_BROKER = 1.0

#: Qpid JMS failover options about reconnect timing and order: the outbox's backoff takes their place.
RECONNECT_OPTIONS = frozenset(
    "failover." + name
    for name in (
        "initialReconnectDelay",
        "reconnectDelay",
        "maxReconnectDelay",
        "useReconnectBackOff",
        "reconnectBackOffMultiplier",
        "maxReconnectAttempts",
        "startupMaxReconnectAttempts",
        "warnAfterReconnectAttempts",
        "randomize",
        "amqpOpenServerListAction",
    )
)

#: Qpid JMS transport and AMQP options that tune buffers, timers and sockets; the forwarders use their own.
TUNING_OPTIONS = frozenset(
    {
        "amqp.idleTimeout",
        "amqp.maxFrameSize",
        "amqp.drainTimeout",
        "amqp.traceFrames",
        "transport.connectTimeout",
        "transport.soTimeout",
        "transport.tcpKeepAlive",
        "transport.tcpNoDelay",
        "transport.sendBufferSize",
        "transport.receiveBufferSize",
        "transport.trafficClass",
        "transport.soLinger",
        "transport.ioThreadCount",
        "transport.useEpoll",
        "transport.useKQueue",
        "transport.useOpenSSL",
    }
)

#: Options whose value, when it says what the forwarders do anyway, is accepted (any other value is refused).
AGREEING_VALUES = {"transport.verifyHost": "true", "transport.trustAll": "false"}

#: Why a security option is refused, and what to do instead.
_TLS_ADVICE = "TLS here trusts the system's CAs or a PEM CA file named by SSL_CERT_FILE, and always checks host names"

_CREDENTIAL_OPTIONS = ("jms.username", "jms.password")
_WEBSOCKET_SCHEMES = ("amqpws", "amqpwss")
#: A failover URI's prefix for options that apply to each of its URLs.
_NESTED = "failover.nested."


@dataclass(frozen=True)
class BrokerEndpoint:
    """One broker: where it is and how to log in.

    ``PEM111_AMQP_PORT`` gives the port (for a list: the port of the URLs that name none; a list URL naming
    another port is refused); without either the port is 5671 with TLS, 5672 without. TLS is on for
    ``amqps://`` or ``PEM111_AMQP_SSL_ENABLED``. ``PEM111_AMQP_USERNAME`` / ``_PASSWORD`` override credentials
    written in the URL. ``path`` is the URL path without its leading ``/`` (the 0-9-1 vhost).
    """

    host: str
    port: int
    tls: bool
    username: str
    password: str
    path: str

    @property
    def safe_url(self) -> str:
        """The broker URL without credentials, for logs and targets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'amqps' if self.tls else 'amqp'}://{host}:{self.port}"


@dataclass(frozen=True)
class Brokers:
    """The configured brokers, in the order given, and the URL options accepted but not used."""

    endpoints: tuple[BrokerEndpoint, ...]
    unused_options: tuple[str, ...] = ()

    def safe_url(self, *, with_path: bool = False) -> str:
        """The broker URL(s) without credentials: one URL, or ``failover:(URL,URL)`` for a list."""
        urls = [e.safe_url + (f"/{e.path}" if with_path and e.path not in ("", "/") else "") for e in self.endpoints]
        return urls[0] if len(urls) == 1 else f"failover:({','.join(urls)})"

    def in_turn(self, first: int) -> Iterator[tuple[int, BrokerEndpoint]]:
        """Every broker once with its index, starting with ``first`` and going on in list order."""
        count = len(self.endpoints)
        for step in range(count):
            index = (first + step) % count
            yield index, self.endpoints[index]

    def check_timeout(self, timeout: float) -> float:
        """How long a reachability check may wait for each broker: together about ``CHECK_TIMEOUT_SECONDS``."""
        share = max(MIN_CHECK_SECONDS_PER_BROKER, CHECK_TIMEOUT_SECONDS / len(self.endpoints))
        return min(timeout, share)

    def connect_in_turn(
        self,
        first: int,
        connect: Callable[[BrokerEndpoint], T],
        failures: tuple[type[BaseException], ...],
        *,
        log: logging.Logger,
        describe: Callable[[BaseException], str] = str,
        failed: str = "cannot connect to ",
    ) -> tuple[int, T]:
        """``connect`` to each broker in turn from index ``first``: the index and connection of the first that
        does not raise one of ``failures``. Nothing has been sent on a connection that failed to open, so trying
        the next broker inside one send can never make a second copy of a message.

        When every broker fails: a :class:`DeliveryError` saying ``failed``, then each broker and why.
        """
        reasons: list[str] = []
        for index, endpoint in self.in_turn(first):
            try:
                return index, connect(endpoint)
            except failures as exc:
                reasons.append(f"{endpoint.safe_url}: {describe(exc)}")
                if len(reasons) < len(self.endpoints):
                    log.info("AMQP broker unreachable, trying the next", extra={"target": endpoint.safe_url})
        raise DeliveryError(failed + "; ".join(reasons))


def broker_variable(settings: Settings) -> str:
    """The variable the broker URL came from, for error messages."""
    return "PEM111_FORWARD_TARGET" if settings.forward_target else "PEM111_AMQP_BROKER"


def is_broker_url(target: str) -> bool:
    """Whether ``target`` names AMQP brokers (one URL, a list, or a failover URI), by its scheme."""
    scheme = target.partition(":")[0].strip().lower()
    return scheme in ("amqp", "amqps", "failover", *_WEBSOCKET_SCHEMES)


def read_brokers(settings: Settings) -> Brokers:
    """The brokers of the configured URL(s); :class:`ConfigError` naming the variable and what is wrong."""
    variable = broker_variable(settings)
    value = settings.resolved_forward_target.strip()
    urls, shared_options = _split_failover(value, variable)
    if not urls:
        raise ConfigError(f"{variable} names no broker URL")
    nested = [(name.removeprefix(_NESTED), v) for name, v in shared_options if name.startswith(_NESTED)]
    outer = [(name, v) for name, v in shared_options if not name.startswith(_NESTED)]
    endpoints: list[BrokerEndpoint] = []
    unused: list[str] = []
    credentials = _credentials(outer, variable, unused)
    for url in urls:
        endpoint, options = _endpoint(url, settings, variable, several=len(urls) > 1)
        username, password = _credentials([*nested, *options], variable, unused)
        endpoints.append(
            _with_credentials(endpoint, settings, username or credentials[0], password or credentials[1])
        )
    return Brokers(tuple(endpoints), tuple(dict.fromkeys(unused)))


def redacted(url: str) -> str:
    """``url`` (or each URL of a list) with any ``user:password@`` and query removed, so that an error never
    shows a password."""
    parts = []
    for each in url.split(","):
        scheme, separator, rest = each.partition("://")
        if not separator:
            parts.append(each.partition("?")[0])
            continue
        authority, slash, tail = rest.partition("/")
        authority = authority.rpartition("@")[2].partition("?")[0]
        parts.append(f"{scheme}://{authority}{slash}{tail.partition('?')[0]}")
    return ",".join(parts)


# -- internals ----------------------------------------------------------------------------------------------------


def _split_failover(value: str, variable: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The URLs of ``value`` and the options of a ``failover:(...)?...`` list (none for a plain list)."""
    if not value.lower().startswith("failover:"):
        return [url.strip() for url in value.split(",") if url.strip()], []
    rest = value[len("failover:") :].strip()
    if not rest.startswith("("):
        return [url.strip() for url in rest.split(",") if url.strip()], []
    inner, closing, after = rest[1:].partition(")")
    if not closing:
        raise ConfigError(f"{variable} {redacted(value)!r}: the failover list has no closing ')'")
    if after and not after.startswith("?"):
        raise ConfigError(f"{variable} {redacted(value)!r}: only ?options may follow the failover list")
    return [url.strip() for url in inner.split(",") if url.strip()], parse_qsl(after[1:], keep_blank_values=True)


def _endpoint(
    url: str, settings: Settings, variable: str, *, several: bool
) -> tuple[BrokerEndpoint, list[tuple[str, str]]]:
    """One URL's broker (credentials from the URL only) and its query options."""
    try:
        parts = urlsplit(url)
        url_port = parts.port
    except ValueError:
        raise ConfigError(f"{variable}: {redacted(url)!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme in _WEBSOCKET_SCHEMES:
        raise ConfigError(
            f"{variable}: {scheme}:// (AMQP over WebSockets) is not supported, the AMQP clients here speak AMQP over "
            "TCP only; use the broker's amqp:// or amqps:// port"
        )
    if scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ConfigError(f"{variable}: {redacted(url)!r} must look like amqp[s]://host[:port]")
    tls = scheme == "amqps" or settings.amqp_ssl_enabled
    if several and settings.amqp_port and url_port and url_port != settings.amqp_port:
        raise ConfigError(
            f"PEM111_AMQP_PORT={settings.amqp_port} contradicts the port of {redacted(url)} in {variable}; "
            "unset PEM111_AMQP_PORT and write each broker's port in its URL"
        )
    port = settings.amqp_port or url_port or (5671 if tls else 5672)
    endpoint = BrokerEndpoint(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        path=unquote(parts.path[1:]) if parts.path.startswith("/") else "",
    )
    return endpoint, parse_qsl(parts.query, keep_blank_values=True)


def _credentials(options: list[tuple[str, str]], variable: str, unused: list[str]) -> tuple[str, str]:
    """``jms.username`` / ``jms.password`` among ``options``; every other option checked (see the module
    docstring), the names of those accepted but not used added to ``unused``."""
    found = dict.fromkeys(_CREDENTIAL_OPTIONS, "")
    for name, value in options:
        if name in found:
            found[name] = value
        elif name in RECONNECT_OPTIONS or name in TUNING_OPTIONS or name.startswith("jms."):
            unused.append(name)
        elif AGREEING_VALUES.get(name) == value.strip().lower():
            continue
        else:
            raise ConfigError(f"{variable}: the URL option {name} is not supported{_advice(name)}")
    return found["jms.username"], found["jms.password"]


def _advice(name: str) -> str:
    if name.startswith("transport."):
        return f": {_TLS_ADVICE}"
    if name.startswith("amqp.sasl"):
        return ": SASL is PLAIN with PEM111_AMQP_USERNAME, else ANONYMOUS"
    return ""


def _with_credentials(endpoint: BrokerEndpoint, settings: Settings, username: str, password: str) -> BrokerEndpoint:
    """``PEM111_AMQP_USERNAME`` / ``_PASSWORD`` first, then the URL's own, then the ``jms.*`` options."""
    return BrokerEndpoint(
        host=endpoint.host,
        port=endpoint.port,
        tls=endpoint.tls,
        username=settings.amqp_username or endpoint.username or username,
        password=settings.amqp_password or endpoint.password or password,
        path=endpoint.path,
    )
