"""Broker lists and Qpid JMS failover URIs (``PEM111_AMQP_BROKER``), for both AMQP forwarders.

What is proved here: every URI form a reference (Qpid JMS) deployment writes is read into the brokers it names,
options included, and what cannot be honoured stops start-up with one line naming it (never a traceback, never a
password); against real brokers (two private RabbitMQ nodes), a list with a closed port first delivers at once,
a list survives its first broker being stopped (the next send goes to the second broker, and nothing is sent
twice), readiness passes while one broker is up; and through the real outbox, a round in which no broker answers
is a failed attempt naming every broker, retried after the outbox's backoff until one is back.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import BrokerUnavailable, PrivateRabbitMQ, start_private_rabbitmq
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from itk_factory import sample_delivery as delivery
from unavailable import unavailable
from waiting import wait_until

from adaptor import composition
from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import DeliveryError, PermanentDeliveryError, forwarder_from_settings
from adaptor.delivery.forwarders.amqp091 import Amqp091Forwarder
from adaptor.delivery.forwarders.amqp10 import Amqp10Forwarder
from adaptor.delivery.forwarders.brokers import read_brokers
from adaptor.itk import rules as itk
from adaptor.ops.metrics import target_kind
from adaptor.store import AttemptOutcome, Status, StoredMessage

PROTOCOLS = ("1.0", "0-9-1")
AnyForwarder = Amqp10Forwarder | Amqp091Forwarder
#: A refused connection is reported at once; a list with a closed port first must not be slow.
DOWN_SECONDS = 5.0




def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def broker_settings(broker_url: str, queue: str, protocol: str, **changes: object) -> Settings:
    return Settings(
        amqp_broker=broker_url,
        amqp_queue_name=queue,
        amqp_protocol=protocol,
        amqp_username="guest",
        amqp_password="guest",
    ).replace(**changes)






def make(made: list[AnyForwarder], config: Settings) -> AnyForwarder:
    forwarder = forwarder_from_settings(config)
    assert isinstance(forwarder, Amqp10Forwarder | Amqp091Forwarder)
    made.append(forwarder)
    return forwarder


@pytest.fixture(scope="module")
def second_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRabbitMQ]:
    """A second private RabbitMQ node (this module's own; the session's node is the other broker of the list)."""
    try:
        node = start_private_rabbitmq(tmp_path_factory.mktemp("rabbitmq-second"))
    except BrokerUnavailable as exc:
        unavailable(f"second private RabbitMQ unavailable: {exc}")
    yield node
    node.close()


@pytest.fixture
def first_broker(second_node: PrivateRabbitMQ) -> Iterator[PrivateRabbitMQ]:
    """The second node, running when the test starts and again afterwards; first in the tests' lists."""
    second_node.start()
    yield second_node
    second_node.start()


# -- the URI forms, no broker ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://mq.example", ["amqp://mq.example:5672"]),
        ("amqps://a.example:5671,amqps://b.example:5671", ["amqps://a.example:5671", "amqps://b.example:5671"]),
        ("failover:(amqp://a:5672,amqp://b:5673)", ["amqp://a:5672", "amqp://b:5673"]),
        ("failover:( amqp://a , amqps://b )", ["amqp://a:5672", "amqps://b:5671"]),
        (
            "failover:(amqp://a:5672,amqp://b:5672)?failover.maxReconnectAttempts=20&failover.randomize=false",
            ["amqp://a:5672", "amqp://b:5672"],
        ),
        (
            "failover:(amqps://a?amqp.idleTimeout=120000,amqps://b)?failover.nested.transport.verifyHost=true"
            "&jms.prefetchPolicy.all=1&failover.nested.transport.tcpKeepAlive=true",
            ["amqps://a:5671", "amqps://b:5671"],
        ),
        ("amqps://ns.servicebus.windows.net?amqp.idleTimeout=120000", ["amqps://ns.servicebus.windows.net:5671"]),
        ("failover:amqp://a,amqp://b", ["amqp://a:5672", "amqp://b:5672"]),
    ],
)
def test_broker_uri_forms(url: str, expected: list[str]) -> None:
    brokers = read_brokers(Settings(amqp_broker=url))
    assert [endpoint.safe_url for endpoint in brokers.endpoints] == expected


def test_options_accepted_but_not_used_are_named_once() -> None:
    url = (
        "failover:(amqp://a?amqp.idleTimeout=1,amqp://b?amqp.idleTimeout=1)"
        "?failover.maxReconnectAttempts=3&jms.forceSyncSend=true&failover.nested.transport.tcpNoDelay=true"
    )
    brokers = read_brokers(Settings(amqp_broker=url))
    assert brokers.unused_options == (
        "failover.maxReconnectAttempts",
        "jms.forceSyncSend",
        "transport.tcpNoDelay",
        "amqp.idleTimeout",
    )


def test_credentials_from_urls_options_and_settings() -> None:
    url = "failover:(amqp://u1:p%2F1@a,amqp://b)?jms.username=jms-user&jms.password=jms-secret"
    a, b = read_brokers(Settings(amqp_broker=url)).endpoints
    assert (a.username, a.password) == ("u1", "p/1")  # the URL's own first
    assert (b.username, b.password) == ("jms-user", "jms-secret")
    a, b = read_brokers(Settings(amqp_broker=url, amqp_username="env", amqp_password="env-secret")).endpoints
    assert (a.username, a.password) == (b.username, b.password) == ("env", "env-secret")  # the settings win


def test_ports_and_tls_of_a_list() -> None:
    a, b = read_brokers(Settings(amqp_broker="amqp://a,amqp://b:5000", amqp_port=5000)).endpoints
    assert (a.port, b.port) == (5000, 5000)
    a, b = read_brokers(Settings(amqp_broker="amqp://a,amqps://b", amqp_ssl_enabled=True)).endpoints
    assert (a.tls, a.port, b.tls, b.port) == (True, 5671, True, 5671)
    a, b = read_brokers(Settings(amqp_broker="amqp://a/vh1,amqp://b/vh2")).endpoints
    assert (a.path, b.path) == ("vh1", "vh2")  # each broker's own 0-9-1 virtual host


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"amqp_broker": "amqpws://mq.example:8080"}, "amqpws:// (AMQP over WebSockets) is not supported"),
        ({"amqp_broker": "failover:(amqp://a,amqpwss://b)"}, "amqpwss:// (AMQP over WebSockets) is not supported"),
        (
            {"amqp_broker": "amqps://a?transport.trustStoreLocation=/etc/trust.jks&transport.trustStorePassword=s3"},
            "option transport.trustStoreLocation is not supported",
        ),
        ({"amqp_broker": "amqps://a?transport.verifyHost=false"}, "option transport.verifyHost is not supported"),
        ({"amqp_broker": "failover:(amqp://a)?failover.nested.amqp.vhost=x"}, "option amqp.vhost is not supported"),
        ({"amqp_broker": "amqp://a?amqp.saslMechanisms=GSSAPI"}, "option amqp.saslMechanisms is not supported"),
        ({"amqp_broker": "failover:(amqp://a,amqp://b"}, "the failover list has no closing ')'"),
        ({"amqp_broker": "failover:(amqp://a)&x=1"}, "only ?options may follow the failover list"),
        ({"amqp_broker": "failover:()"}, "PEM111_AMQP_BROKER names no broker URL"),
        ({"amqp_broker": "amqp://a,stomp://b"}, "'stomp://b' must look like amqp[s]://host[:port]"),
        ({"amqp_broker": "amqp://a:1,amqp://b:2", "amqp_port": 1}, "PEM111_AMQP_PORT=1 contradicts the port of"),
        ({"forward_target": "failover:(amqpws://a)"}, "PEM111_FORWARD_TARGET: amqpws://"),
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_what_cannot_be_honoured_stops_start_up_in_one_line(
    changes: dict[str, object], expected: str, protocol: str
) -> None:
    config = Settings(amqp_protocol=protocol).replace(**changes)
    with pytest.raises(ConfigError) as refused:
        forwarder_from_settings(config)
    message = str(refused.value)
    assert expected in message
    assert "\n" not in message and "s3" not in message


def test_errors_never_show_passwords() -> None:
    for url in (
        "failover:(amqp://user:s3cret@a,amqp://b)?jms.password=s3cret&oops=1",
        "failover:(amqp://user:s3cret@a:notaport,amqp://b)",
        "amqp://user:s3cret@a?jms.password=s3cret&transport.keyStorePassword=s3cret",
    ):
        with pytest.raises(ConfigError) as refused:
            read_brokers(Settings(amqp_broker=url))
        assert "s3cret" not in str(refused.value), url


def test_targets_of_a_list() -> None:
    url = "failover:(amqp://user:secret@a:5672,amqps://b)?jms.password=secret"
    amqp10 = Amqp10Forwarder(Settings(amqp_broker=url))
    assert amqp10.target == "failover:(amqp://a:5672,amqps://b:5671)/encounter-report"
    amqp091 = Amqp091Forwarder(Settings(amqp_broker=url.replace("a:5672", "a:5672/vh"), amqp_protocol="0-9-1"))
    assert amqp091.target.startswith("failover:(amqp://a:5672/vh,amqps://b:5671) (AMQP 0-9-1")
    assert "secret" not in amqp10.target + amqp091.target
    assert target_kind(amqp10.target) == target_kind(amqp091.target) == "amqp"  # the metrics' label


def test_unused_options_are_logged_once_at_start(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    Amqp10Forwarder(Settings(amqp_broker="failover:(amqp://a,amqp://b)?failover.maxReconnectAttempts=3"))
    [record] = [r for r in caplog.records if r.getMessage() == "broker URL options not used"]
    assert record.options == "failover.maxReconnectAttempts"  # type: ignore[attr-defined]


# -- failover against real brokers -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_closed_port_first_in_the_list(
    rabbitmq: PrivateRabbitMQ, forwarders: list[AnyForwarder], protocol: str
) -> None:
    queue = rabbitmq.unique_queue()
    url = f"failover:(amqp://127.0.0.1:{closed_port()},{rabbitmq.url})?failover.maxReconnectAttempts=5"
    forwarder = make(forwarders, broker_settings(url, queue, protocol))

    started = time.monotonic()
    forwarder.send(delivery("via-the-second"))
    forwarder.check()  # readiness: one broker is enough
    assert time.monotonic() - started < DOWN_SECONDS

    [got] = rabbitmq.consume(queue, protocol, 1)
    assert got.message_id == "via-the-second"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_no_broker_answering_is_one_transient_failure_naming_each(
    forwarders: list[AnyForwarder], protocol: str
) -> None:
    first, second = closed_port(), closed_port()
    url = f"amqp://127.0.0.1:{first},amqp://127.0.0.1:{second}"
    forwarder = make(forwarders, broker_settings(url, "q", protocol))
    for attempt in (lambda: forwarder.send(delivery("nowhere")), forwarder.check):
        started = time.monotonic()
        with pytest.raises(DeliveryError) as failed:
            attempt()
        assert time.monotonic() - started < DOWN_SECONDS
        assert not isinstance(failed.value, PermanentDeliveryError)
        assert f"127.0.0.1:{first}" in str(failed.value) and f"127.0.0.1:{second}" in str(failed.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_failover_list_survives_its_first_broker_stopping(
    first_broker: PrivateRabbitMQ,
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
    protocol: str,
) -> None:
    queue = rabbitmq.unique_queue()
    url = f"failover:({first_broker.url},{rabbitmq.url})?failover.maxReconnectAttempts=-1"
    forwarder = make(forwarders, broker_settings(url, queue, protocol))
    forwarder.send(delivery("to-the-first"))

    first_broker.stop()
    # As the outbox would: a send that fails is tried again as a new attempt. The broker closed its connections
    # as it stopped, so the forwarder notices before sending and the first try goes to the second broker.
    failures = 0
    for _ in range(2):
        try:
            forwarder.send(delivery("after-the-stop"))
            break
        except DeliveryError:
            failures += 1
    assert failures == 0, "the closed connection was not noticed before sending"
    first_broker.start()
    forwarder.send(delivery("after-the-restart"))  # stays with the broker it is connected to

    assert [got.message_id for got in rabbitmq.consume(queue, protocol, 2)] == ["after-the-stop", "after-the-restart"]
    assert rabbitmq.queue_depth(queue) == 0
    # The first broker kept what it had accepted (durable queue, persistent message), and got nothing else.
    assert [got.message_id for got in first_broker.consume(queue, protocol, 1)] == ["to-the-first"]
    assert first_broker.queue_depth(queue) == 0


def status(message: StoredMessage | None) -> Status | None:
    return None if message is None else message.status


def test_through_the_outbox_rounds_are_separated_by_its_backoff(
    first_broker: PrivateRabbitMQ, tmp_path: Path
) -> None:
    """Every broker of the list down: one failed attempt per round, naming each broker; the outbox tries again
    after its backoff, and delivers once a broker is back."""
    queue = first_broker.unique_queue()
    nothing = f"127.0.0.1:{closed_port()}"
    url = f"failover:(amqp://{nothing},{first_broker.url})"
    settings = broker_settings(url, queue, "0-9-1").replace(
        data_dir=str(tmp_path / "data"),
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
        delivery_backoff_initial_seconds=0.2,
        delivery_backoff_max_seconds=0.5,
        delivery_poll_seconds=0.05,
        delivery_workers=1,
    )
    first_broker.stop()
    components = composition.build(settings)
    try:
        raw = to_bytes(build_request())
        message = itk.validate_request(itk.parse_request(raw, settings), settings, components.allow_list)
        components.receiver.accept(message, raw)
        [stored] = components.store.find_by_message_id(message.message_id)
        components.start_delivery()
        wait_until(lambda: len(components.store.delivery_history(stored.id)) >= 2, "two failed rounds", 30)
        first_broker.start()
        wait_until(lambda: status(components.store.get(stored.id)) is Status.DELIVERED, "the delivery", 60)
        history = components.store.delivery_history(stored.id)
    finally:
        components.close()
    *failed, delivered = history
    assert delivered.outcome is AttemptOutcome.DELIVERED
    assert failed and all(attempt.outcome is AttemptOutcome.FAILED for attempt in failed)
    for attempt in failed:
        error = attempt.error or ""
        assert nothing in error and first_broker.url.removeprefix("amqp://") in error, error
    # Rounds are never closer than the shortest backoff (0.2 s less its jitter): the outbox paces them.
    gaps = [later.started_at - earlier.started_at for earlier, later in zip(history, history[1:], strict=False)]
    assert all(gap.total_seconds() >= 0.15 for gap in gaps), gaps
    [got] = first_broker.consume_091(queue, 1)
    assert got.message_id == message.message_id
