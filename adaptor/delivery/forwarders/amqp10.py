"""``amqp://`` / ``amqps://``: an AMQP 1.0 queue (ActiveMQ, Amazon MQ, Azure Service Bus, RabbitMQ's plugin).

This is the reference adaptor's transport, and the message is what its JMS producer sends, so consumers written
for the reference keep working: the Bundle JSON as an ``amqp-value`` string body (a JMS ``TextMessage``, also
marked with the ``x-opt-jms-msg-type`` annotation JMS clients use), message id = the SOAP MessageID, the
application properties of :meth:`Delivery.properties` (``messageId``, ``trackingId``, ``interaction``,
``odsCode``, ``dosServiceId``), content type ``application/fhir+json``, durable.

A send returns only once the broker has settled the delivery as *accepted*. *Rejected* is permanent only when the
broker says the message itself is bad (see :data:`PERMANENT_REJECT_CONDITIONS`); rejected for any other reason
(a full queue, a policy), *released* and *modified* are transient, as are connection failures and timeouts.

The broker is one URL or a list tried in turn (:mod:`.brokers`). The address is ``PEM111_AMQP_QUEUE_NAME``
verbatim (``PEM111_AMQP_EXCHANGE`` and ``PEM111_AMQP_ROUTING_KEY`` belong to AMQP 0-9-1 and are refused here).
The sender asks for a durable target terminus, which is what makes RabbitMQ's AMQP 1.0 plugin create a missing
queue *durable* (plain ``NAME`` and ``/queue/NAME`` both create it; ``/amq/queue/NAME`` only uses an existing
queue and silently drops messages when there is none).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from proton import (
    SSL,
    Condition,
    Endpoint,
    Event,
    Link,
    LinkException,
    Message,
    ProtonException,
    SSLDomain,
    Terminus,
    byte,
    symbol,
)
from proton import Delivery as ProtonDelivery
from proton.reactor import AtLeastOnce, LinkOption
from proton.utils import BlockingConnection, BlockingSender

from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import (
    FHIR_JSON,
    Delivery,
    DeliveryError,
    InDoubtDeliveryError,
    PermanentDeliveryError,
)
from adaptor.delivery.forwarders.brokers import BrokerEndpoint, Brokers, read_brokers

log = logging.getLogger("adaptor.forwarders.amqp10")  # pinned: the JSON log format names it

DEFAULT_TIMEOUT_SECONDS = 30.0
#: How long closing an abandoned connection waits for the broker: it is being thrown away, so hardly at all.
_ABANDON_TIMEOUT_SECONDS = 0.2
#: Non-blocking reactor rounds before a connection is reused: enough to read a close and act on it.
_POLL_ROUNDS = 3

#: The annotation a JMS client (qpid-jms, ActiveMQ) reads to rebuild the message type; 5 = TextMessage.
JMS_MSG_TYPE = symbol("x-opt-jms-msg-type")
JMS_TEXT_MESSAGE = byte(5)

#: Rejection conditions that describe the message itself, so sending it again cannot succeed. Anything else
#: (no condition, resource limits, authorisation, not-found) is about the broker's state or configuration and
#: may succeed later, so it stays transient: dead-lettering every message while an operator fixes a queue
#: would be worse than retrying them.
PERMANENT_REJECT_CONDITIONS = frozenset(
    {
        "amqp:decode-error",
        "amqp:invalid-field",
        "amqp:link:message-size-exceeded",
        "amqp:not-implemented",
    }
)


def _refuse_0_9_1_routing(settings: Settings) -> None:
    """An exchange or routing key means AMQP 0-9-1; over AMQP 1.0 they would be ignored and every message sent to
    ``PEM111_AMQP_QUEUE_NAME`` instead (on RabbitMQ a queue created for the purpose that nobody reads), so a
    configuration naming them refuses to start."""
    named = [
        name
        for name, value in (
            ("PEM111_AMQP_EXCHANGE", settings.amqp_exchange),
            ("PEM111_AMQP_ROUTING_KEY", settings.amqp_routing_key),
        )
        if value
    ]
    if named:
        raise ConfigError(
            f"{' and '.join(named)} {'apply' if len(named) > 1 else 'applies'} to AMQP 0-9-1 only: set "
            f"PEM111_AMQP_PROTOCOL=0-9-1, or unset {'them' if len(named) > 1 else 'it'} to send to "
            "PEM111_AMQP_QUEUE_NAME over AMQP 1.0"
        )


def _refuse_tls_without_ssl(brokers: Brokers) -> None:
    """python-qpid-proton compiled without OpenSSL (its source build finds no ``pkg-config`` or OpenSSL headers, and
    says nothing) fails every ``amqps://`` connection; refuse to start instead of failing each delivery later."""
    if any(endpoint.tls for endpoint in brokers.endpoints) and not SSL.present():
        raise ConfigError(
            f"{brokers.safe_url()} needs TLS, but python-qpid-proton was built without SSL support: reinstall it "
            "with pkg-config and the OpenSSL headers present (pip install --force-reinstall --no-binary "
            "python-qpid-proton python-qpid-proton), or use the Docker image"
        )


def build_message(delivery: Delivery) -> Message:
    """The AMQP 1.0 message for one delivery (see the module docstring for why it looks like this)."""
    return Message(
        body=delivery.bundle_json.decode("utf-8"),  # str -> amqp-value string: a JMS TextMessage
        id=delivery.broker_message_id,
        durable=True,
        content_type=FHIR_JSON,
        creation_time=delivery.created(),
        properties=delivery.properties(),
        annotations={JMS_MSG_TYPE: JMS_TEXT_MESSAGE},
    )


def tls_domain() -> SSLDomain:
    """Client TLS that verifies the broker's certificate and host name against the system's trusted CAs.

    OpenSSL's default locations are used, so ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` point it at a private CA.
    """
    domain = SSLDomain(SSLDomain.MODE_CLIENT)
    domain.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
    return domain


def outcome_error(target: str, state: int, condition: Condition | None) -> DeliveryError | None:
    """None for *accepted*; otherwise the error for the broker's outcome, permanent only for a bad message."""
    if state == ProtonDelivery.ACCEPTED:
        return None
    detail = f" ({condition.name}: {condition.description})" if condition else ""
    if state == ProtonDelivery.REJECTED:
        if condition is not None and condition.name in PERMANENT_REJECT_CONDITIONS:
            return PermanentDeliveryError(f"{target} rejected the message{detail}")
        return DeliveryError(f"{target} rejected the message{detail}")
    if state == ProtonDelivery.RELEASED:
        return DeliveryError(f"{target} released the message without taking it")
    if state == ProtonDelivery.MODIFIED:
        return DeliveryError(f"{target} returned the message as modified, not delivered{detail}")
    return DeliveryError(f"{target} settled the message without accepting it (outcome {state})")


class _Connection(BlockingConnection):
    """A :class:`BlockingConnection` whose ``close()`` cannot hang on a broker that has stopped answering.

    proton's ``close()`` waits for the peer's close frame and then runs the reactor until the socket is gone; when
    the peer never answers (a hung broker, or a constructor that timed out and closes itself) that last step
    never ends (python-qpid-proton 0.40). An *abandoned* connection, one that failed or is being thrown away,
    first shuts its own side of the transport, so the socket is closed without the peer's help. And a close()
    that finds the socket already gone (a broker that died) stops waiting for the close frame at once rather
    than after the full timeout.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.abandoned = True  # until the constructor returns, a close() means the connection failed
        super().__init__(*args, **kwargs)
        self.abandoned = False

    def close(self) -> None:
        conn = self.conn
        if self.abandoned and conn is not None and conn.transport is not None:
            self.timeout = _ABANDON_TIMEOUT_SECONDS
            conn.transport.close_tail()
            conn.transport.close_head()
        super().close()

    def on_transport_closed(self, event: Event) -> None:
        super().on_transport_closed(event)
        if self.closing:
            # The socket is gone (say the broker died): no close frame can come, so close() must not wait for one.
            self.disconnected = True


class _DurableTarget(LinkOption):
    """Ask for a durable target terminus: RabbitMQ then declares a missing queue durable (others ignore it)."""

    def apply(self, link: Link) -> None:
        link.target.durability = Terminus.CONFIGURATION


class Amqp10Forwarder:
    """Sends each Bundle to one AMQP 1.0 queue over a single reused connection.

    Thread-safe: a lock serialises sends (each one waits for its disposition, milliseconds on a healthy
    broker), which keeps one connection and one link. After any failure the connection is dropped and the
    next send opens a new one.

    Each :meth:`send` hands the message to the broker at most once: the outbox records one delivery attempt
    per call, so a second transfer inside one call would be a copy the store could not account for (the
    broker may have taken the first one before the connection failed). Instead, before a connection is
    reused, what the broker sent meanwhile is read without waiting (:meth:`_usable_sender`): a connection the
    broker closed while it sat idle (ActiveMQ closes idle connections after 30 s, Azure Service Bus after
    10 minutes) or that died with the broker is noticed there, before anything is sent, and replaced. A
    connection that dies without saying so fails the send; the outbox retries it as a new attempt after its
    backoff (``PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS``, 1 s by default).

    With a list of brokers, a new connection goes to the first that accepts one, trying them in turn from the
    one last connected to (:meth:`~adaptor.delivery.forwarders.brokers.Brokers.connect_in_turn`); each gets
    the whole ``timeout``. When none does the send fails, and the outbox's backoff separates the rounds.
    """

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        _refuse_0_9_1_routing(settings)
        self.brokers = read_brokers(settings)
        _refuse_tls_without_ssl(self.brokers)
        self.address = settings.amqp_queue_name
        self.timeout = timeout
        separator = "" if self.address.startswith("/") else "/"
        self.target = f"{self.brokers.safe_url()}{separator}{self.address}"
        if self.brokers.unused_options:
            log.info("broker URL options not used", extra={"options": ",".join(self.brokers.unused_options)})
        self._lock = threading.Lock()
        self._connection: _Connection | None = None
        self._sender: BlockingSender | None = None
        self._broker = 0  # the broker tried first: the one last connected to

    def send(self, delivery: Delivery) -> None:
        message = build_message(delivery)
        with self._lock:
            try:
                self._send(message)
            except ProtonException as exc:  # connection, link, SASL, TLS failures and timeouts
                self._discard()
                raise DeliveryError(f"AMQP 1.0 send to {self.target} failed: {exc}") from exc
            except InDoubtDeliveryError:
                self._discard()
                raise  # not sent again here: the broker may have taken it (see the class docstring)

    def close(self) -> None:
        with self._lock:
            self._discard(failed=False)

    def check(self) -> None:
        """Open a connection to the broker (TCP, TLS, SASL) and close it again; raise :class:`DeliveryError`
        when that fails. A connection of its own, so that a check never waits behind a send for the lock."""
        timeout = self.brokers.check_timeout(self.timeout)
        _, connection = self.brokers.connect_in_turn(
            self._broker, lambda endpoint: self._connect(endpoint, timeout), (ProtonException,), log=log
        )
        connection.abandoned = False
        try:
            connection.close()
        except Exception:  # it was opened, which is what the check is about
            log.debug("AMQP 1.0 close of the check connection to %s failed", self.target, exc_info=True)

    # -- internals --------------------------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        """Send on the current connection (opening one if needed) and check the broker's outcome."""
        sender = self._usable_sender() or self._open()
        try:
            # error_states=[]: inspect every outcome here instead of proton's generic SendException.
            outcome = sender.send(message, timeout=self.timeout, error_states=[])
        except ProtonException as exc:
            if _still_queued(sender):  # never written to the connection: certainly not delivered
                raise
            raise InDoubtDeliveryError(
                f"AMQP 1.0 send to {self.target}: no outcome from the broker after the message was written, so it "
                f"may have been delivered ({exc})"
            ) from exc
        error = outcome_error(self.target, outcome.remote_state, outcome.remote.condition)
        if error is not None:
            raise error

    def _usable_sender(self) -> BlockingSender | None:
        """The current link, after reading what the broker sent since the last send without waiting for more;
        ``None`` (the connection dropped) when there is none or the broker has closed it, its session or the
        link, or the socket is gone. Nothing is sent here, so replacing a dead connection cannot duplicate."""
        connection, sender = self._connection, self._sender
        if connection is None or sender is None:
            return None
        container = connection.container
        waiting = container.timeout
        container.timeout = 0  # poll the socket, never block
        try:
            # One round reads what is waiting on the socket; the next dispatches the events it produced.
            for _ in range(_POLL_ROUNDS):
                container.process()
        except ProtonException as exc:  # the handler raises on a close from the broker
            log.debug("AMQP 1.0 connection to %s is gone (%s)", self.target, exc)
            self._discard()
            return None
        finally:
            container.timeout = waiting
        conn, link = connection.conn, sender.link
        if (
            connection.disconnected
            or conn is None
            or any(endpoint.state & Endpoint.REMOTE_CLOSED for endpoint in (conn, link.session, link))
        ):
            log.debug("AMQP 1.0 connection to %s was closed while idle; reconnecting", self.target)
            self._discard()
            return None
        return sender

    def _connect(self, endpoint: BrokerEndpoint, timeout: float) -> _Connection:
        return _Connection(
            endpoint.safe_url,  # no credentials in the URL: proton logs it
            timeout=timeout,
            ssl_domain=tls_domain() if endpoint.tls else None,
            # SASL PLAIN with credentials (RabbitMQ, ActiveMQ, Amazon MQ; Azure's SAS policy name and key),
            # ANONYMOUS without (RabbitMQ maps it to its default user).
            user=endpoint.username or None,
            password=endpoint.password or None,
            allowed_mechs="PLAIN" if endpoint.username else "ANONYMOUS",
        )

    def _open(self) -> BlockingSender:
        """Connect to the first broker that answers (see :meth:`Brokers.connect_in_turn`) and attach the link."""
        index, connection = self.brokers.connect_in_turn(
            self._broker,
            lambda endpoint: self._connect(endpoint, self.timeout),
            (ProtonException,),
            log=log,
            failed=f"AMQP 1.0 send to {self.target} failed, cannot connect to ",
        )
        self._broker, endpoint = index, self.brokers.endpoints[index]
        self._connection = connection
        # The link is attached by hand rather than with connection.create_sender, which waits for the attach
        # even when the broker has already refused it by ending the session (RabbitMQ does that when the queue
        # exists with other settings), so a refusal would cost the whole timeout.
        assert connection.conn is not None  # set by a constructor that returned
        link = connection.container.create_sender(
            connection.conn, self.address, options=[AtLeastOnce(), _DurableTarget()]
        )
        try:
            connection.wait(
                lambda: not link.state & Endpoint.REMOTE_UNINIT or bool(link.session.state & Endpoint.REMOTE_CLOSED),
                msg=f"attaching to {self.address}",
            )
            if link.session.state & Endpoint.REMOTE_CLOSED:
                raise LinkException("the broker ended the session")
            sender = BlockingSender(connection, link)
        except ProtonException as exc:
            reason = _remote_conditions(connection)
            self._discard()
            raise DeliveryError(f"could not attach to {self.address!r} on {endpoint.safe_url}: {exc}{reason}") from exc
        log.info("AMQP 1.0 connected to %s", endpoint.safe_url, extra={"target": self.target})
        self._sender = sender
        return sender

    def _discard(self, *, failed: bool = True) -> None:
        """Close and forget the connection: gracefully when it is healthy, at once when it ``failed``."""
        connection, self._connection, self._sender = self._connection, None, None
        if connection is None:
            return
        connection.abandoned = failed
        try:
            connection.close()
        except Exception:  # it is being thrown away: the error that got us here is the one that matters
            log.debug("AMQP 1.0 close of %s failed", self.target, exc_info=True)


def _still_queued(sender: BlockingSender) -> bool:
    """Whether the link still holds the delivery that failed, unwritten (say, the broker gave no credit)."""
    try:
        return bool(sender.link.queued)
    except Exception:  # the link is gone with its connection: nothing says the transfer was not written
        return False


def _remote_conditions(connection: _Connection) -> str:
    """Why the broker refused an attach, when it said so (RabbitMQ ends the session rather than the link)."""
    conn = connection.conn
    if conn is None:
        return ""
    conditions = []
    if conn.remote_condition:
        conditions.append(conn.remote_condition)
    session = conn.session_head(0)
    while session:
        if session.remote_condition:
            conditions.append(session.remote_condition)
        session = session.next(0)
    link = conn.link_head(0)
    while link:
        if link.remote_condition:
            conditions.append(link.remote_condition)
        link = link.next(0)
    return "".join(f" ({c.name}: {c.description})" for c in conditions)
