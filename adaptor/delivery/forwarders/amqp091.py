"""``amqp://`` / ``amqps://`` with ``PEM111_AMQP_PROTOCOL=0-9-1``: publish to RabbitMQ (or Amazon MQ for RabbitMQ).

Each Bundle is published with publisher confirms, as a persistent message (``delivery_mode`` 2) with
``mandatory`` set, content type ``application/fhir+json``, ``message_id`` = the SOAP MessageID and the
properties of :meth:`Delivery.properties` as headers. A send returns only once the broker has confirmed it.

Where it goes: ``PEM111_AMQP_EXCHANGE`` (default: the default exchange ``""``) with routing key
``PEM111_AMQP_ROUTING_KEY`` (default: ``PEM111_AMQP_QUEUE_NAME``). With the default exchange the routing key *is*
the queue, so the forwarder makes sure it exists: an existing queue is used as it is (whatever its type or
arguments), a missing one is declared durable, like the AMQP 1.0 plugin does for the 1.0 forwarder. With a named
exchange the operator owns the topology (exchange, queues, bindings) and nothing is declared.

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
from adaptor.delivery.forwarders import CHECK_TIMEOUT_SECONDS, FHIR_JSON, Delivery, DeliveryError
from adaptor.delivery.forwarders.amqp10 import broker_endpoint

log = logging.getLogger("adaptor.forwarders.amqp091")  # pinned: the JSON log format names it

DEFAULT_TIMEOUT_SECONDS = 30.0
_MAX_SHORTSTR_BYTES = 255  # AMQP 0-9-1 short strings (message_id among them) are at most 255 bytes
#: Non-blocking I/O rounds before a connection is reused: enough to read a close from the broker and act on it.
_POLL_ROUNDS = 2

#: What pika raises when a connection, channel or publish fails (its connection workflow has its own family).
_PikaFailure = (pika.exceptions.AMQPError, AMQPConnectorException, OSError)


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
    """

    def __init__(self, settings: Settings, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.endpoint = broker_endpoint(settings)
        self.virtual_host = self.endpoint.path or "/"
        self.exchange = settings.amqp_exchange
        self.routing_key = settings.amqp_routing_key or settings.amqp_queue_name
        if not self.exchange and not self.routing_key:
            raise ConfigError("PEM111_AMQP_ROUTING_KEY or PEM111_AMQP_QUEUE_NAME must name the queue")
        self.timeout = timeout
        vhost = "" if self.virtual_host == "/" else f"/{self.virtual_host}"
        self.target = (
            f"{self.endpoint.safe_url}{vhost} (AMQP 0-9-1, exchange {self.exchange or '(default)'!s}, "
            f"routing key {self.routing_key})"
        )
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: Any = None  # pika's BlockingChannel

    def send(self, delivery: Delivery) -> None:
        body, properties = delivery.bundle_json, _properties(delivery)
        with self._lock:
            try:
                self._publish(body, properties)
            except _PikaFailure as exc:
                self._discard()
                # Not published again here: the broker may have taken it (see the class docstring).
                raise DeliveryError(f"AMQP 0-9-1 publish to {self.target} failed: {_describe(exc)}") from exc

    def close(self) -> None:
        with self._lock:
            self._discard()

    def check(self) -> None:
        """Open a connection to the broker (TCP, TLS, login to the vhost) and close it again; raise
        :class:`DeliveryError` when that fails. A connection of its own: pika's are not shared between threads."""
        try:
            connection = pika.BlockingConnection(self._parameters(min(self.timeout, CHECK_TIMEOUT_SECONDS)))
        except _PikaFailure as exc:
            raise DeliveryError(f"cannot connect to {self.endpoint.safe_url}: {_describe(exc)}") from exc
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

    def _open(self) -> Any:
        connection = pika.BlockingConnection(self._parameters())
        self._connection = connection
        channel = connection.channel()
        if not self.exchange:
            channel = self._ensure_queue(connection, channel)
        channel.confirm_delivery()
        self._channel = channel
        log.info("AMQP 0-9-1 connected to %s", self.target)
        return channel

    def _ensure_queue(self, connection: pika.BlockingConnection, channel: Any) -> Any:
        """Use the routing key's queue as it is when it exists; declare it durable when it does not."""
        try:
            channel.queue_declare(self.routing_key, passive=True)
            return channel
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
        channel = connection.channel()  # the failed passive declare closed the first one
        channel.queue_declare(self.routing_key, durable=True)
        log.info("AMQP 0-9-1 declared durable queue %r on %s", self.routing_key, self.endpoint.safe_url)
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

    def _parameters(self, timeout: float | None = None) -> pika.ConnectionParameters:
        endpoint = self.endpoint
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
            virtual_host=self.virtual_host,
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
