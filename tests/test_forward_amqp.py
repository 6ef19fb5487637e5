"""AMQP delivery: both forwarders against a real broker (the private RabbitMQ node of :mod:`brokers`).

What is proved here: every corpus request, converted, arrives on the queue byte for byte with the reference's
properties, content type, message id and durability, read back by a real consumer (AMQP 1.0 through RabbitMQ's
plugin, AMQP 0-9-1 natively); a missing queue is created durable and keeps its messages through a broker
restart and a broker crash; wrong credentials, an unroutable or refused message, a stopped broker and a hung
broker are transient DeliveryErrors, raised within bounded time; after the broker comes back the same forwarder
instance delivers again without being told; a connection the broker closed is replaced before anything is sent
on it, and a send hands the message over at most once (the outbox records one attempt per send, so a second
transfer inside one would be a copy the store cannot account for); TLS verifies the broker against the trusted
CAs and its host name.
The outcome classification and the settings parsing are also checked without a broker.
"""

from __future__ import annotations

import json
import ssl
import threading
import time

import pytest
from brokers import PrivateRabbitMQ
from conftest import require_shared
from itk_factory import sample_delivery as delivery
from lxml import etree
from proton import Condition
from proton import Delivery as ProtonDelivery

from adaptor.config import ConfigError, Settings
from adaptor.delivery.conversion import convert, read_request
from adaptor.delivery.forwarders import (
    FHIR_JSON,
    Delivery,
    DeliveryError,
    PermanentDeliveryError,
    amqp10,
    forwarder_from_settings,
)
from adaptor.delivery.forwarders.amqp091 import Amqp091Forwarder
from adaptor.delivery.forwarders.amqp10 import (
    JMS_MSG_TYPE,
    JMS_TEXT_MESSAGE,
    Amqp10Forwarder,
    build_message,
    outcome_error,
)
from adaptor.delivery.forwarders.brokers import read_brokers

ITK = "urn:nhs-itk:ns:201005"
DOS_ADDRESS_TYPE = "2.16.840.1.113883.2.1.3.2.4.18.44"
ODS_ADDRESS_PREFIX = "urn:nhs-uk:addressing:ods:"
PROTOCOLS = ("1.0", "0-9-1")
AnyForwarder = Amqp10Forwarder | Amqp091Forwarder
#: What "quickly" means for a broker that is down: a refused connection is reported at once.
DOWN_SECONDS = 5.0
#: The timeout the forwarders get in the hung-broker test.
HUNG_TIMEOUT = 2.0




def corpus_deliveries() -> list[Delivery]:
    """Every corpus request converted, with the envelope facts the delivery carries beside the Bundle."""
    folder = require_shared("corpus", "reference")
    deliveries = []
    for number, path in enumerate(sorted(folder.glob("*-itk-request.xml"))):
        raw = path.read_bytes()
        _, fields = read_request(raw)
        header = next(etree.fromstring(raw).iter(f"{{{ITK}}}header"))
        ods = tuple(
            uri[len(ODS_ADDRESS_PREFIX) :] for kind, uri in fields.addresses if uri.startswith(ODS_ADDRESS_PREFIX)
        )
        dos = tuple(uri for kind, uri in fields.addresses if kind == DOS_ADDRESS_TYPE)
        deliveries.append(
            Delivery(
                record_id=f"record-{number}",
                message_id=fields.message_id,
                tracking_id=header.get("trackingid", ""),
                interaction=fields.interaction,
                ods_codes=ods,
                dos_ids=dos,
                # As the outbox encodes it: UTF-8, non-ASCII characters kept.
                bundle_json=json.dumps(convert(raw), ensure_ascii=False).encode("utf-8"),
            )
        )
    assert deliveries, f"no *-itk-request.xml in {folder}"
    return deliveries


def settings(broker: PrivateRabbitMQ, queue: str, protocol: str = "1.0", **changes: object) -> Settings:
    return Settings(
        amqp_broker=broker.url,
        amqp_queue_name=queue,
        amqp_protocol=protocol,
        amqp_username=broker.username,
        amqp_password=broker.password,
    ).replace(**changes)






def make(made: list[AnyForwarder], config: Settings, **kwargs: float) -> Amqp10Forwarder | Amqp091Forwarder:
    forwarder: Amqp10Forwarder | Amqp091Forwarder
    if config.amqp_protocol == "0-9-1":
        forwarder = Amqp091Forwarder(config, **kwargs)
    else:
        forwarder = Amqp10Forwarder(config, **kwargs)
    made.append(forwarder)
    return forwarder


# -- the message on the queue ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_corpus_bundles_arrive_with_the_reference_properties(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
    protocol: str,
) -> None:
    deliveries = corpus_deliveries()
    queue = rabbitmq.unique_queue("corpus")
    forwarder = make(forwarders, settings(rabbitmq, queue, protocol))

    for item in deliveries:
        forwarder.send(item)

    # Each send returned once the broker had the message: the queue holds exactly what was sent, no copy.
    assert rabbitmq.queue_depth(queue) == len(deliveries), "the queue does not hold what was sent"
    received = rabbitmq.consume(queue, protocol, len(deliveries))
    assert len(received) == len(deliveries)
    assert rabbitmq.queue_depth(queue) == 0, "more on the queue than was sent"
    for sent, got in zip(deliveries, received, strict=True):
        assert got.body == sent.bundle_json  # byte for byte: the converted Bundle, UTF-8
        assert json.loads(got.body) == json.loads(sent.bundle_json)
        assert got.properties == sent.properties()  # messageId, trackingId, interaction, odsCode, dosServiceId
        assert got.properties["messageId"] == sent.message_id
        assert got.content_type == FHIR_JSON == "application/fhir+json"
        assert got.message_id == sent.message_id
        assert got.durable
        if protocol == "1.0":
            # As the reference's JMS TextMessage: an amqp-value string body, marked as a text message.
            assert got.body_kind == "amqp-value:str"
            assert got.annotations == {"x-opt-jms-msg-type": JMS_TEXT_MESSAGE}
    assert rabbitmq.queue_is_durable(queue), "the forwarder must create a missing queue durable"


def test_amqp10_message_shape_without_a_broker() -> None:
    item = delivery(bundle_json='{"name":"Zoë"}'.encode())
    message = build_message(item)
    assert message.body == '{"name":"Zoë"}' and isinstance(message.body, str)
    assert message.id == "uuid:MSG-1"
    assert message.durable is True
    assert message.content_type == FHIR_JSON
    assert message.properties == item.properties()
    assert message.annotations == {JMS_MSG_TYPE: JMS_TEXT_MESSAGE}


def test_amqp091_keeps_an_over_long_message_id_in_the_header(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    # message_id is an AMQP 0-9-1 short string (255 bytes at most); the messageId header has no such limit.
    queue = rabbitmq.unique_queue()
    long_id = "uuid:" + "7" * 300
    make(forwarders, settings(rabbitmq, queue, "0-9-1")).send(delivery(message_id=long_id))
    [got] = rabbitmq.consume_091(queue, 1)
    assert got.message_id is None
    assert got.properties["messageId"] == long_id


def test_concurrent_sends_on_one_forwarder_all_arrive(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    threads_per_protocol, each = 4, 5
    queues = {protocol: rabbitmq.unique_queue() for protocol in PROTOCOLS}
    errors: list[BaseException] = []

    def run(forwarder: Amqp10Forwarder | Amqp091Forwarder, worker: int) -> None:
        try:
            for n in range(each):
                forwarder.send(delivery(message_id=f"MSG-{worker}-{n}"))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = []
    for protocol, queue in queues.items():
        forwarder = make(forwarders, settings(rabbitmq, queue, protocol))
        threads += [threading.Thread(target=run, args=(forwarder, w)) for w in range(threads_per_protocol)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    expected = {f"MSG-{w}-{n}" for w in range(threads_per_protocol) for n in range(each)}
    for protocol, queue in queues.items():
        received = rabbitmq.consume(queue, protocol, len(expected))
        assert {got.message_id for got in received} == expected, protocol
        assert rabbitmq.queue_depth(queue) == 0, protocol


# -- addresses and queues ---------------------------------------------------------------------------------------


def test_amqp10_address_forms_on_rabbitmq(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    # A plain name (the reference's form, and ActiveMQ's) and /queue/NAME both create the queue, durable.
    for address in (rabbitmq.unique_queue(), "/queue/" + rabbitmq.unique_queue()):
        queue = address.rpartition("/")[2]
        make(forwarders, settings(rabbitmq, address)).send(delivery())
        assert rabbitmq.queue_is_durable(queue)
        assert len(rabbitmq.consume_amqp10(queue, 1)) == 1

    # A queue declared with other settings (here a quorum queue) refuses the plain name's declaration at once,
    # with the broker's reason; /amq/queue/NAME uses the existing queue as it is.
    quorum = rabbitmq.unique_queue()
    rabbitmq.declare_queue(quorum, arguments={"x-queue-type": "quorum"})
    started = time.monotonic()
    with pytest.raises(DeliveryError) as refused:
        make(forwarders, settings(rabbitmq, quorum)).send(delivery())
    assert time.monotonic() - started < DOWN_SECONDS
    assert not isinstance(refused.value, PermanentDeliveryError)
    assert "precondition-failed" in str(refused.value) and "x-queue-type" in str(refused.value)
    make(forwarders, settings(rabbitmq, f"/amq/queue/{quorum}")).send(delivery())
    assert rabbitmq.queue_depth(quorum) == 1


def test_amqp091_uses_an_existing_queue_as_it_is(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    quorum = rabbitmq.unique_queue()
    rabbitmq.declare_queue(quorum, arguments={"x-queue-type": "quorum"})
    make(forwarders, settings(rabbitmq, quorum, "0-9-1")).send(delivery())
    assert rabbitmq.queue_depth(quorum) == 1


def test_amqp091_exchange_and_routing_key(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    queue = rabbitmq.unique_queue()
    rabbitmq.declare_queue(queue)
    rabbitmq.bind_queue(queue, "amq.direct", "encounter")
    config = settings(rabbitmq, "ignored-with-a-routing-key", "0-9-1", amqp_exchange="amq.direct")
    make(forwarders, config.replace(amqp_routing_key="encounter")).send(delivery())
    assert len(rabbitmq.consume_091(queue, 1)) == 1
    assert not rabbitmq.queue_exists("ignored-with-a-routing-key"), "nothing is declared for a named exchange"

    # Unroutable (mandatory returned it): transient, and quick; the connection stays usable.
    unroutable = make(forwarders, config.replace(amqp_routing_key="nobody-listens"))
    for _ in range(2):
        with pytest.raises(DeliveryError) as returned:
            unroutable.send(delivery())
        assert not isinstance(returned.value, PermanentDeliveryError)
        assert "no queue is bound" in str(returned.value)
        assert '"resourceType"' not in str(returned.value), "the body must not leak into errors and logs"

    with pytest.raises(DeliveryError, match="no exchange"):
        make(forwarders, config.replace(amqp_exchange="no-such-exchange")).send(delivery())


def test_amqp091_negative_confirm_is_transient(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    queue = rabbitmq.unique_queue()
    rabbitmq.declare_queue(queue, arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    forwarder = make(forwarders, settings(rabbitmq, queue, "0-9-1"))
    forwarder.send(delivery())
    with pytest.raises(DeliveryError, match="negative publisher confirm") as nacked:
        forwarder.send(delivery())  # the queue is full: the broker nacks instead of confirming
    assert not isinstance(nacked.value, PermanentDeliveryError)
    rabbitmq.consume_091(queue, 1)
    forwarder.send(delivery())  # room again: the same forwarder carries on


# -- failures ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_credentials_are_a_transient_error(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
    protocol: str,
) -> None:
    config = settings(rabbitmq, rabbitmq.unique_queue(), protocol, amqp_password="not-the-password")
    forwarder = make(forwarders, config)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as failed:
        forwarder.send(delivery())
    assert time.monotonic() - started < DOWN_SECONDS + 5  # RabbitMQ delays its AMQP 1.0 SASL refusal ~3 s
    # Not permanent: the credentials are wrong for every message, and fixing them lets all of them through.
    assert not isinstance(failed.value, PermanentDeliveryError)
    assert "not-the-password" not in str(failed.value)
    assert "unauthorized" in str(failed.value).lower() or "authentication" in str(failed.value).lower()


def test_broker_down_then_back_same_forwarders_deliver_and_nothing_is_lost(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    queues = {protocol: rabbitmq.unique_queue() for protocol in PROTOCOLS}
    senders = {protocol: make(forwarders, settings(rabbitmq, queue, protocol)) for protocol, queue in queues.items()}
    for sender in senders.values():
        sender.send(delivery(message_id="before"))  # open connections, which the stop will break

    rabbitmq.stop()
    for protocol, sender in senders.items():
        started = time.monotonic()
        with pytest.raises(DeliveryError) as down:
            sender.send(delivery(message_id="during"))
        assert time.monotonic() - started < DOWN_SECONDS, protocol
        assert not isinstance(down.value, PermanentDeliveryError)

    rabbitmq.start()
    for sender in senders.values():
        sender.send(delivery(message_id="after"))  # the same instance reconnects by itself, first time
    for protocol, queue in queues.items():
        # Durable queue + persistent message: what was accepted before the stop survived it.
        received = rabbitmq.consume(queue, protocol, 2)
        assert [got.message_id for got in received] == ["before", "after"], protocol
        assert rabbitmq.queue_depth(queue) == 0, protocol


def close_connections_from_the_broker(broker: PrivateRabbitMQ) -> None:
    """What a broker's idle timeout does: it closes the client connections (a close frame, then the socket)."""
    closed = broker.rabbitmqctl("close_all_connections", "closed by the test, as an idle timeout would")
    assert closed.returncode == 0, closed.stderr
    time.sleep(0.5)  # the close frames are on their way


class TransferCounter:
    """Counts the messages a forwarder hands to its client library's transfer call (the broker is real)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, protocol: str) -> None:
        self.count = 0
        if protocol == "1.0":
            from proton.utils import BlockingSender as owner
        else:
            from pika.adapters.blocking_connection import BlockingChannel as owner
        name = "send" if protocol == "1.0" else "basic_publish"
        original = getattr(owner, name)

        def counted(*args: object, **kwargs: object) -> object:
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_connection_the_broker_closed_is_replaced_before_sending(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    queue = rabbitmq.unique_queue()
    forwarder = make(forwarders, settings(rabbitmq, queue, protocol))
    forwarder.send(delivery(message_id="before"))
    close_connections_from_the_broker(rabbitmq)
    transfers = TransferCounter(monkeypatch, protocol)

    forwarder.send(delivery(message_id="after"))  # the dead connection is noticed before the transfer

    assert transfers.count == 1  # once, on a new connection: never first on the dead one, then again
    assert [got.message_id for got in rabbitmq.consume(queue, protocol, 2)] == ["before", "after"]
    assert rabbitmq.queue_depth(queue) == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_send_that_fails_is_not_sent_again_inside_the_same_send(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    """A connection that dies without the forwarder noticing beforehand (the check before reuse is skipped here,
    as for a connection that dies between that check and the transfer): the send fails, transient, and is not
    made again on a new connection inside the same call, where the store would see one attempt for two
    transfers. The outbox sends it again as a new attempt."""
    queue = rabbitmq.unique_queue()
    forwarder = make(forwarders, settings(rabbitmq, queue, protocol))
    forwarder.send(delivery(message_id="before"))
    if isinstance(forwarder, Amqp10Forwarder):
        monkeypatch.setattr(forwarder, "_usable_sender", lambda: forwarder._sender)
    else:
        monkeypatch.setattr(forwarder, "_usable_channel", lambda: forwarder._channel)
    close_connections_from_the_broker(rabbitmq)
    transfers = TransferCounter(monkeypatch, protocol)

    with pytest.raises(DeliveryError) as failed:
        forwarder.send(delivery(message_id="lost-with-the-connection"))

    assert not isinstance(failed.value, PermanentDeliveryError)
    assert transfers.count == 1
    forwarder.send(delivery(message_id="next"))  # the next send (the outbox's next attempt) opens a connection
    assert transfers.count == 2
    received = [got.message_id for got in rabbitmq.consume(queue, protocol, 2)]
    assert received == ["before", "next"]
    assert rabbitmq.queue_depth(queue) == 0


def test_accepted_messages_survive_a_broker_crash(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    # A send returns only once the broker has accepted (1.0) / confirmed (0-9-1) the message, which RabbitMQ
    # does for a persistent message on a durable queue only once it is on disk: SIGKILL loses none of them.
    queues = {protocol: rabbitmq.unique_queue() for protocol in PROTOCOLS}
    for protocol, queue in queues.items():
        sender = make(forwarders, settings(rabbitmq, queue, protocol))
        for n in range(20):
            sender.send(delivery(message_id=f"{protocol}-{n}"))
    # What is under test is the messages. Once in ten clean-clone runs the queue declared last was gone after the
    # crash (depth 0 = no such queue). Likely cause: the broker writes queue definitions to its Mnesia log
    # asynchronously. Flush that log first, so that the crash tests the confirmed messages alone.
    synced = rabbitmq.rabbitmqctl("eval", "mnesia:sync_log().")
    assert synced.returncode == 0, synced.stderr
    rabbitmq.kill()
    rabbitmq.start()
    for protocol, queue in queues.items():
        assert rabbitmq.queue_depth(queue) == 20, protocol


def test_hung_broker_fails_within_bounded_time(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
) -> None:
    queue = rabbitmq.unique_queue()
    used = {p: make(forwarders, settings(rabbitmq, queue, p), timeout=HUNG_TIMEOUT) for p in PROTOCOLS}
    for sender in used.values():
        sender.send(delivery())
    fresh = {p: make(forwarders, settings(rabbitmq, queue, p), timeout=HUNG_TIMEOUT) for p in PROTOCOLS}
    rabbitmq.pause()  # the VM is stopped: sockets stay open, nothing answers
    try:
        # AMQP 1.0 waits `timeout` for the disposition; pika cannot time out a confirm, so a stuck broker is
        # noticed by its heartbeat check (heartbeat = timeout / 2, checked every heartbeat + 5 s).
        # Slack of 10 s for a busy machine: the bound tells "gave up" from "waits for ever", not speed.
        limits = {"1.0": HUNG_TIMEOUT + 10, "0-9-1": 2 * (HUNG_TIMEOUT / 2 + 5) + HUNG_TIMEOUT + 10}
        for name, group in (("connected", used), ("new", fresh)):
            for protocol, sender in group.items():
                started = time.monotonic()
                try:
                    sender.send(delivery())
                except DeliveryError:
                    pass
                else:
                    pytest.fail(f"{name} {protocol} forwarder sent to the paused broker")
                elapsed = time.monotonic() - started
                assert elapsed < limits[protocol], f"{name} {protocol} forwarder took {elapsed:.1f} s"
        for sender in used.values():
            started = time.monotonic()
            sender.close()
            assert time.monotonic() - started < 5.0
    finally:
        rabbitmq.resume()
    # A VM resumed from SIGSTOP first catches up with its timers and with the connections that died meanwhile;
    # the forwarders' 2 s timeout must not race that. Once a connection of the test's own is answered, the
    # same forwarders must deliver again by themselves.
    assert rabbitmq.queue_exists(queue)
    for sender in used.values():
        sender.send(delivery())


# -- TLS --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_verifies_the_broker(
    rabbitmq: PrivateRabbitMQ,
    forwarders: list[AnyForwarder],
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    if rabbitmq.tls_url is None or rabbitmq.ca_file is None:
        pytest.fail("the private broker has no TLS listener (openssl missing)")
    queue = rabbitmq.unique_queue()
    config = settings(rabbitmq, queue, protocol, amqp_broker=rabbitmq.tls_url)

    # The broker's certificate comes from a private CA the system does not trust: refused.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(DeliveryError, match="(?i)certificate verify failed"):
        make(forwarders, config).send(delivery())

    # Trusted through OpenSSL's standard variable: delivered, encrypted.
    monkeypatch.setenv("SSL_CERT_FILE", str(rabbitmq.ca_file))
    make(forwarders, config).send(delivery())
    assert len(rabbitmq.consume(queue, protocol, 1)) == 1

    # Trusted CA but the wrong host name (the certificate names localhost only): refused.
    wrong_host = config.replace(amqp_broker=rabbitmq.tls_url.replace("localhost", "127.0.0.1"))
    with pytest.raises(DeliveryError, match="(?i)certificate verify failed"):
        make(forwarders, wrong_host).send(delivery())


def test_amqps_without_ssl_in_proton_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """A python-qpid-proton built without OpenSSL would fail every delivery: the forwarder is refused at start-up
    in one line (``nhs111 serve`` prints it and exits 2), and a plain amqp:// target is unaffected."""
    monkeypatch.setattr(amqp10.SSL, "present", staticmethod(lambda: False))
    for broker in ("amqps://mq.example.nhs.uk", "amqp://a.example,amqps://b.example"):
        with pytest.raises(ConfigError, match="built without SSL support") as refused:
            Amqp10Forwarder(Settings(amqp_broker=broker))
        assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match="built without SSL"):
        Amqp10Forwarder(Settings(amqp_broker="amqp://mq.example.nhs.uk", amqp_ssl_enabled=True))
    Amqp10Forwarder(Settings(amqp_broker="amqp://mq.example.nhs.uk")).close()


def test_amqp091_tls_parameters() -> None:
    config = Settings(amqp_broker="amqp://mq.example.nhs.uk", amqp_protocol="0-9-1", amqp_ssl_enabled=True)
    forwarder = Amqp091Forwarder(config)
    parameters = forwarder._parameters(forwarder.brokers.endpoints[0])
    assert parameters.port == 5671
    assert parameters.ssl_options.server_hostname == "mq.example.nhs.uk"
    context = parameters.ssl_options.context
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


# -- settings and outcomes, no broker -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"amqp_broker": "amqp://mq.example"}, ("mq.example", 5672, False, "", "", "")),
        ({"amqp_broker": "amqps://mq.example"}, ("mq.example", 5671, True, "", "", "")),
        ({"amqp_broker": "amqp://mq.example", "amqp_ssl_enabled": True}, ("mq.example", 5671, True, "", "", "")),
        ({"amqp_broker": "amqp://mq.example:5555", "amqp_port": 6000}, ("mq.example", 6000, False, "", "", "")),
        ({"amqp_broker": "amqp://u%40x:p%2Fw@mq.example:5555/vh"}, ("mq.example", 5555, False, "u@x", "p/w", "vh")),
        (
            {"amqp_broker": "amqp://u:p@mq.example", "amqp_username": "user", "amqp_password": "secret"},
            ("mq.example", 5672, False, "user", "secret", ""),
        ),
        ({"amqp_broker": "amqp://[::1]:5672"}, ("::1", 5672, False, "", "", "")),
    ],
)
def test_broker_endpoint(changes: dict[str, object], expected: tuple[object, ...]) -> None:
    [endpoint] = read_brokers(Settings().replace(**changes)).endpoints
    got = (endpoint.host, endpoint.port, endpoint.tls, endpoint.username, endpoint.password, endpoint.path)
    assert got == expected


def test_targets_never_show_credentials() -> None:
    config = Settings(amqp_broker="amqps://name:secret@ns.servicebus.windows.net", amqp_queue_name="encounter-report")
    assert Amqp10Forwarder(config).target == "amqps://ns.servicebus.windows.net:5671/encounter-report"
    assert Amqp10Forwarder(config.replace(amqp_queue_name="/queue/q")).target.endswith(":5671/queue/q")
    rabbit = Amqp091Forwarder(config.replace(amqp_protocol="0-9-1", amqp_broker="amqp://name:secret@[::1]/vh"))
    assert "secret" not in rabbit.target and "name" not in rabbit.target
    assert rabbit.target.startswith("amqp://[::1]:5672/vh (AMQP 0-9-1")
    with pytest.raises(ConfigError) as bad:
        read_brokers(Settings(amqp_broker="amqp://name:secret@host:notaport"))
    assert "secret" not in str(bad.value)


def test_factory_picks_the_protocol() -> None:
    config = Settings(amqp_broker="amqp://localhost")
    assert isinstance(forwarder_from_settings(config), Amqp10Forwarder)
    assert isinstance(forwarder_from_settings(config.replace(amqp_protocol="0-9-1")), Amqp091Forwarder)


@pytest.mark.parametrize(
    ("state", "condition", "expected"),
    [
        (ProtonDelivery.ACCEPTED, None, None),
        (ProtonDelivery.REJECTED, Condition("amqp:decode-error", "bad"), PermanentDeliveryError),
        (ProtonDelivery.REJECTED, Condition("amqp:link:message-size-exceeded", "big"), PermanentDeliveryError),
        (ProtonDelivery.REJECTED, None, DeliveryError),
        (ProtonDelivery.REJECTED, Condition("amqp:resource-limit-exceeded", "full"), DeliveryError),
        (ProtonDelivery.REJECTED, Condition("amqp:unauthorized-access", "policy"), DeliveryError),
        (ProtonDelivery.RELEASED, None, DeliveryError),
        (ProtonDelivery.MODIFIED, None, DeliveryError),
        (0, None, DeliveryError),  # settled with no outcome: not accepted
    ],
)
def test_amqp10_outcomes(state: int, condition: Condition | None, expected: type[Exception] | None) -> None:
    error = outcome_error("amqp://broker:5672/q", state, condition)
    if expected is None:
        assert error is None
    else:
        assert type(error) is expected
        if condition is not None and error is not None:
            assert condition.name in str(error)
