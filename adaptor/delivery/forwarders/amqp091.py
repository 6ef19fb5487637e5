"""``amqp://`` / ``amqps://`` with ``PEM111_AMQP_PROTOCOL=0-9-1``: publish to RabbitMQ (or Amazon MQ for RabbitMQ).

Each Bundle is published with publisher confirms, as a persistent message (``delivery_mode`` 2) with
``mandatory`` set, content type ``application/fhir+json``, ``message_id`` = the SOAP MessageID and the
properties of :meth:`Delivery.properties` as headers. A send returns only once the broker has confirmed it.

Where it goes, as the reference adaptor reads the same settings (:func:`route`):

==============================================  ===========================================================
only ``PEM111_AMQP_QUEUE_NAME``                 the default exchange ``""``, routing key = the queue name
``PEM111_AMQP_ROUTING_KEY``, no exchange        ``amq.direct`` (the reference's default exchange), that key
``PEM111_AMQP_EXCHANGE`` (and a routing key)    that exchange, the routing key (default: the queue name)
==============================================  ===========================================================

With the default exchange the routing key *is* the queue, so the forwarder makes sure it exists: an existing
queue is used as it is (whatever its type or arguments), a missing one is declared durable, like the AMQP 1.0
plugin does for the 1.0 forwarder. With an exchange (named, or ``amq.direct`` by default) the operator owns the
topology (exchange, queues, bindings) and nothing is declared: a routing key is never taken for a queue name,
which would declare a queue that nobody reads. A queue name written as an AMQP 1.0 address (``/amq/queue/q``,
``/queue/q``, ``/exchange/x/k``: a setting copied from a 1.0 configuration) would likewise become a new queue of
that literal name, so it refuses to start.

The broker is one URL or a list tried in turn (:mod:`.brokers`); each URL's path is its virtual host.

Outcomes: a message the broker cannot route anywhere (``mandatory`` returned it: no queue bound for the routing
key) and a negative confirm are *transient* :class:`DeliveryError`\\ s, not permanent ones: both describe the
broker's topology or state (a queue not bound yet, a full queue with ``reject-publish``), which an operator can
fix, and every message would fail the same way, so dead-lettering would throw the whole stream away instead
of holding it in the outbox until the broker is put right. Connection, authentication and TLS failures are
transient too. This transport has no permanent failure: nothing about one Bundle makes RabbitMQ refuse it.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

import pika
import pika.exceptions
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import FHIR_JSON, Delivery, DeliveryError, InDoubtDeliveryError
from adaptor.delivery.forwarders.brokers import BrokerEndpoint, read_brokers

log = logging.getLogger("adaptor.forwarders.amqp091")  # pinned: the JSON log format names it

DEFAULT_TIMEOUT_SECONDS = 30.0
#: The exchange the reference publishes to when a routing key is given without one.
REFERENCE_EXCHANGE = "amq.direct"
_MAX_SHORTSTR_BYTES = 255  # AMQP 0-9-1 short strings (message_id among them) are at most 255 bytes
#: Non-blocking I/O rounds before a connection is reused: enough to read a close from the broker and act on it.
_POLL_ROUNDS = 2

#: What pika raises when a connection, channel or publish fails (its connection workflow has its own family).
_PikaFailure = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)
#: What pika raises from a publish on a channel or connection it already knows is closed: nothing was written.
_REFUSED_BEFORE_WRITING = (pika.exceptions.ChannelWrongStateError, pika.exceptions.ConnectionWrongStateError)


class Amqp091Forwarder:
    """Publishes each Bundle over one reused AMQP 0-9-1 connection and confirm-mode channel.

    Thread-safe: a lock serialises publishes (pika's blocking connection is not thread-safe, and each publish
    waits for its confirm anyway). After a connection or channel failure the connection is dropped and the next
    send opens a new one. Before a connection is reused its pending I/O is processed, which notices a
    connection the broker closed (or that died with the broker) before anything is sent, and replaces it.

    Each :meth:`send` publishes at most once: the outbox records one delivery attempt per call, and a publish
    that fails may still have reached the queue (the confirm lost with the connection), so publishing again
    inside the same call would be a copy the store could not account for. A failed publish is a transient
    :class:`DeliveryError`; the outbox retries it as a new attempt after its backoff.

    With a list of brokers, a new connection goes to the first that accepts one, trying them in turn from the
    one last connected to (:meth:`~adaptor.delivery.forwarders.brokers.Brokers.connect_in_turn`).
    """

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.exchange, self.routing_key = route(settings)
        self.brokers = read_brokers(settings)
        self.timeout = timeout
        self.target = (
            f"{self.brokers.safe_url(with_path=True)} (AMQP 0-9-1, exchange {self.exchange or '(default)'!s}, "
            f"routing key {self.routing_key})"
        )
        if self.brokers.unused_options:
            log.info("broker URL options not used", extra={"options": ",".join(self.brokers.unused_options)})
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None  # pika's BlockingChannel
        self._broker = 0  # the broker tried first: the one last connected to

    def send(self, delivery: Delivery) -> None:
        body, properties = delivery.bundle_json, _properties(delivery)
        with self._lock:
            try:
                self._publish(body, properties)
            except _PikaFailure as exc:
                self._discard()
                raise DeliveryError(f"AMQP 0-9-1 publish to {self.target} failed: {_describe(exc)}") from exc
            except InDoubtDeliveryError:
                self._discard()
                raise  # not published again here: the broker may have taken it (see the class docstring)

    def close(self) -> None:
        with self._lock:
            self._discard()

    def check(self) -> None:
        """Open a connection to the broker (TCP, TLS, login to the vhost) and close it again; raise
        :class:`DeliveryError` when that fails. A connection of its own: pika's are not shared between threads."""
        timeout = self.brokers.check_timeout(self.timeout)
        _, connection = self.brokers.connect_in_turn(
            self._broker,
            lambda endpoint: pika.BlockingConnection(self._parameters(endpoint, timeout)),
            _PikaFailure,
            log=log,
            describe=_describe,
        )
        try:
            connection.close()
        except _PikaFailure:  # it was opened, which is what the check is about
            log.debug("AMQP 0-9-1 close of the check connection to %s failed", self.target, exc_info=True)

    # -- internals --------------------------------------------------------------------------------------------

    def _publish(self, body: bytes, properties: pika.BasicProperties) -> None:
        channel = self._usable_channel() or self._open()
        try:
            channel.basic_publish(self.exchange, self.routing_key, body, properties=properties, mandatory=True)
        except pika.exceptions.UnroutableError as exc:
            # The channel is still fine: keep the connection. Not the library's message: it shows the body.
            raise DeliveryError(
                f"{self.target}: no queue is bound for routing key {self.routing_key!r} on exchange "
                f"{self.exchange or '(default)'!s}; the message was returned unrouted"
            ) from exc
        except pika.exceptions.NackError as exc:
            raise DeliveryError(f"{self.target} refused the message (negative publisher confirm)") from exc
        except _REFUSED_BEFORE_WRITING:
            raise
        except _PikaFailure as exc:
            raise InDoubtDeliveryError(
                f"AMQP 0-9-1 publish to {self.target}: no confirm from the broker after the message was written, so "
                f"it may have been delivered ({_describe(exc)})"
            ) from exc

    def _open(self) -> Any:
        """Connect to the first broker that answers (see :meth:`Brokers.connect_in_turn`) and open the channel."""
        index, connection = self.brokers.connect_in_turn(
            self._broker,
            lambda endpoint: pika.BlockingConnection(self._parameters(endpoint)),
            _PikaFailure,
            log=log,
            describe=_describe,
            failed=f"AMQP 0-9-1 publish to {self.target} failed, cannot connect to ",
        )
        self._broker, endpoint = index, self.brokers.endpoints[index]
        self._connection = connection
        channel = connection.channel()
        if not self.exchange:
            channel = self._ensure_queue(connection, channel, endpoint)
        channel.confirm_delivery()
        self._channel = channel
        log.info("AMQP 0-9-1 connected to %s", endpoint.safe_url, extra={"target": self.target})
        return channel

    def _ensure_queue(self, connection: pika.BlockingConnection, channel: Any, endpoint: BrokerEndpoint) -> Any:
        """Use the routing key's queue as it is when it exists; declare it durable when it does not."""
        try:
            channel.queue_declare(self.routing_key, passive=True)
            return channel
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
        channel = connection.channel()  # the failed passive declare closed the first one
        channel.queue_declare(self.routing_key, durable=True)
        log.info("AMQP 0-9-1 declared durable queue %r on %s", self.routing_key, endpoint.safe_url)
        return channel

    def _usable_channel(self) -> Any:
        """The current channel after processing pending I/O (heartbeats, a close from the broker) without
        waiting for more, or None when there is none or it is gone. Nothing is sent here, so replacing a dead
        connection cannot duplicate a message."""
        connection, channel = self._connection, self._channel
        if connection is None or channel is None:
            return None
        try:
            # The first round reads what is waiting on the socket; pika acts on a close from the broker (and
            # raises it) only in the next one.
            for _ in range(_POLL_ROUNDS):
                connection.process_data_events(time_limit=0)
        except _PikaFailure as exc:
            log.debug("AMQP 0-9-1 connection to %s is gone (%s)", self.target, _describe(exc))
            self._discard()
            return None
        if not (connection.is_open and channel.is_open):
            self._discard()
            return None
        return channel

    def _parameters(self, endpoint: BrokerEndpoint, timeout: float | None = None) -> pika.ConnectionParameters:
        timeout = self.timeout if timeout is None else timeout
        options: dict[str, Any] = {}
        if endpoint.username:
            options["credentials"] = pika.PlainCredentials(endpoint.username, endpoint.password)
        # else pika's default guest/guest: RabbitMQ's default user, which it accepts from loopback only.
        if endpoint.tls:
            # The system's trusted CAs (SSL_CERT_FILE / SSL_CERT_DIR point at a private one), host name checked.
            options["ssl_options"] = pika.SSLOptions(ssl.create_default_context(), server_hostname=endpoint.host)
        return pika.ConnectionParameters(
            host=endpoint.host,
            port=endpoint.port,
            virtual_host=endpoint.path or "/",
            # pika cannot time out a publisher confirm; its heartbeat check closes a connection that has been
            # silent for heartbeat + 5 s, which bounds the wait on a broker that stops answering mid-publish.
            heartbeat=max(1, round(timeout / 2)),
            # A broker in a memory or disk alarm blocks publishers; give up after the timeout instead of hanging.
            blocked_connection_timeout=timeout,
            socket_timeout=timeout,
            stack_timeout=timeout,
            connection_attempts=1,  # the outbox worker owns retrying, with backoff
            client_properties={"connection_name": "nhs111-adaptor"},
            **options,
        )

    def _discard(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except _PikaFailure:
                log.debug("AMQP 0-9-1 close of %s failed", self.target, exc_info=True)


def route(settings: Settings) -> tuple[str, str]:
    """The exchange and routing key for the settings (see the module docstring); :class:`ConfigError` when they
    could send every message to a queue nobody reads."""
    exchange, routing_key, queue = settings.amqp_exchange, settings.amqp_routing_key, settings.amqp_queue_name
    if routing_key and not exchange:
        return REFERENCE_EXCHANGE, routing_key
    if exchange:
        return exchange, routing_key or queue
    if not queue:
        raise ConfigError("PEM111_AMQP_QUEUE_NAME or PEM111_AMQP_ROUTING_KEY must say where messages go")
    if queue.startswith("/"):
        raise ConfigError(
            f"PEM111_AMQP_QUEUE_NAME {queue!r} is an AMQP 1.0 address, which AMQP 0-9-1 would take for a new queue "
            "of that name: name the queue itself, or set PEM111_AMQP_EXCHANGE and PEM111_AMQP_ROUTING_KEY"
        )
    return "", queue


def _properties(delivery: Delivery) -> pika.BasicProperties:
    message_id: str | None = delivery.broker_message_id
    if len(delivery.broker_message_id.encode("utf-8")) > _MAX_SHORTSTR_BYTES:
        # Too long for the message_id property (pika could not encode the message at all); the messageId
        # header carries it in full either way.
        message_id = None
    return pika.BasicProperties(
        content_type=FHIR_JSON,
        delivery_mode=pika.DeliveryMode.Persistent.value,  # 2: written to disk in a durable queue
        message_id=message_id,
        timestamp=int(delivery.created()),
        headers=delivery.properties(),
    )


def _describe(exc: BaseException) -> str:
    """A failure in words, never a message body (pika's ``repr`` of a returned message would show it)."""
    if isinstance(exc, pika.exceptions.ChannelClosed | pika.exceptions.ConnectionClosed):
        return f"{type(exc).__name__} {exc.reply_code}: {exc.reply_text}"
    if isinstance(exc, pika.exceptions.AMQPConnectionError | AMQPConnectorException):
        return repr(exc)  # its str() is often empty; the repr names the underlying socket or workflow error
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
