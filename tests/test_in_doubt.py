"""A send whose outcome is unknown is recorded as *in doubt* and counted among the store's possible redeliveries.

The reproduction from issue 13, made deterministic: the broker is hung (SIGSTOP) after the forwarder connected,
so the Bundle is written to the connection and no answer comes. The attempt is recorded as ``in_doubt`` (not
``failed``), retried as a transient failure, and once the broker is back and the message delivered, the store's
``possible_redeliveries()`` lists it; every copy the broker then holds is accounted for by the store's attempts.
For AMQP 1.0 and AMQP 0-9-1, with the real outbox and a real RabbitMQ.

The FHIR HTTP forwarder makes the same distinction against real sockets: a POST that was sent and then got no
(complete) answer is in doubt; a connection that could not be made, or a server certificate refused, is a plain
failure: nothing was sent.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from brokers import PrivateRabbitMQ
from fhir_server import FhirServer, free_port, make_pki, server_tls
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes

from adaptor import composition
from adaptor.config import Settings
from adaptor.delivery.forwarders import Delivery, DeliveryError, InDoubtDeliveryError
from adaptor.delivery.forwarders.amqp091 import Amqp091Forwarder
from adaptor.delivery.forwarders.amqp10 import Amqp10Forwarder
from adaptor.delivery.forwarders.fhir_http import FhirHttpForwarder
from adaptor.itk import rules as itk
from adaptor.store import AttemptOutcome, Status

#: The forwarders' timeout here: how long the hung broker is waited for (0-9-1 notices by its heartbeat).
TIMEOUT_SECONDS = 2.0


@pytest.mark.parametrize("protocol", ["1.0", "0-9-1"])
def test_an_answer_lost_with_the_broker_is_in_doubt_and_counted(
    rabbitmq: PrivateRabbitMQ, tmp_path: Path, protocol: str
) -> None:
    queue = rabbitmq.unique_queue("in-doubt")
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        amqp_broker=rabbitmq.url,
        amqp_queue_name=queue,
        amqp_protocol=protocol,
        amqp_username=rabbitmq.username,
        amqp_password=rabbitmq.password,
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
        # Long enough that the retry is not taken while the broker is still hung (it is brought forward below).
        delivery_backoff_initial_seconds=60.0,
        delivery_backoff_max_seconds=60.0,
        delivery_workers=0,
    )
    forwarder_type = Amqp10Forwarder if protocol == "1.0" else Amqp091Forwarder
    forwarder = forwarder_type(settings, timeout=TIMEOUT_SECONDS)
    components = composition.build(settings, forwarder=forwarder)
    try:
        warm_up = Delivery("warm-up", "warm-up", "", "", (), (), b"{}")
        forwarder.send(warm_up)  # connected, the queue exists: the next send is written at once
        raw = to_bytes(build_request())
        message = itk.validate_request(itk.parse_request(raw, settings), settings, components.allow_list)
        components.receiver.accept(message, raw)
        [stored] = components.store.find_by_message_id(message.message_id)

        rabbitmq.pause()
        try:
            [first] = components.worker.drain()
        finally:
            rabbitmq.resume()
        assert first.status is Status.RETRYING
        [attempt] = components.store.delivery_history(stored.id)
        assert attempt.outcome is AttemptOutcome.IN_DOUBT, attempt.error
        assert "may have been delivered" in (attempt.error or "")

        assert rabbitmq.queue_exists(queue)  # the resumed broker answers again
        assert components.store.retry_waiting_now() == 1
        [second] = components.worker.drain()
        assert second.status is Status.DELIVERED
        history = [a.outcome for a in components.store.delivery_history(stored.id)]
        assert history == [AttemptOutcome.IN_DOUBT, AttemptOutcome.DELIVERED]
        [redelivery] = components.store.possible_redeliveries()
        assert (redelivery.record_id, redelivery.interrupted_attempts, redelivery.in_doubt_attempts) == (
            stored.id,
            0,
            1,
        )
    finally:
        components.close()
        forwarder.close()

    # Whether the hung broker kept the first transfer is up to it; either way the store explains every copy.
    consume = rabbitmq.consume_amqp10 if protocol == "1.0" else rabbitmq.consume_091
    received = [got.message_id for got in consume(queue, 4, 5.0)]
    copies = received.count(message.message_id)
    assert received.count("warm-up") == 1
    assert 1 <= copies <= 1 + redelivery.in_doubt_attempts, received


# -- FHIR over HTTP ------------------------------------------------------------------------------------------------


class OneShotServer:
    """A loopback socket server that reads one whole HTTP request and then does what ``answer`` says."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/fhir/Bundle"
        self.received = b""
        self._answer = answer
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            while b"\r\n\r\n" not in self.received:
                self.received += connection.recv(65536)
            head, _, body = self.received.partition(b"\r\n\r\n")
            headers = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
            length = int(headers[b"content-length"])
            while len(body) < length:
                body += connection.recv(65536)
            self.received = head + b"\r\n\r\n" + body
            self._answer(connection)

    def close(self) -> None:
        self._thread.join(10)
        self.listener.close()


@pytest.fixture
def servers() -> Iterator[list[OneShotServer]]:
    made: list[OneShotServer] = []
    yield made
    for server in made:
        server.close()


def http_forwarder(url: str, **changes: object) -> FhirHttpForwarder:
    return FhirHttpForwarder(Settings(forward_target=url, fhir_timeout_seconds=5.0).replace(**changes))


BUNDLE = Delivery("record-1", "uuid:HTTP-1", "TRACK-1", "interaction", ("A91000",), (), b'{"resourceType":"Bundle"}')


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda connection: None, "no answer after the request was sent"),  # closed unanswered
        (
            lambda connection: connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"resource"),
            "failed reading the response",
        ),
    ],
    ids=["closed-unanswered", "answer-cut-short"],
)
def test_a_post_sent_without_a_complete_answer_is_in_doubt(
    servers: list[OneShotServer], answer: Callable[[socket.socket], None], expected: str
) -> None:
    server = OneShotServer(answer)
    servers.append(server)
    sender = http_forwarder(server.url)
    try:
        with pytest.raises(InDoubtDeliveryError, match=expected):
            sender.send(BUNDLE)
    finally:
        sender.close()
    assert server.received.endswith(BUNDLE.bundle_json)  # the receiver had the whole Bundle


def test_a_read_timeout_is_in_doubt() -> None:
    with FhirServer() as slow:
        slow.reply(200, delay=5.0)
        sender = http_forwarder(slow.url, fhir_timeout_seconds=0.5)
        with pytest.raises(InDoubtDeliveryError, match="ReadTimeoutError"):
            sender.send(BUNDLE)
        sender.close()
        assert len(slow.requests) == 1


def test_nothing_sent_is_a_plain_failure(tmp_path: Path) -> None:
    refused = http_forwarder(f"http://127.0.0.1:{free_port()}/fhir")
    with pytest.raises(DeliveryError) as caught:
        refused.send(BUNDLE)
    assert not isinstance(caught.value, InDoubtDeliveryError)

    pki = make_pki(tmp_path)
    with FhirServer(tls=server_tls(pki.untrusted_server_cert, pki.untrusted_server_key)) as untrusted:
        sender = http_forwarder(untrusted.url.replace("http://", "https://"), fhir_ca_bundle=str(pki.ca_cert))
        with pytest.raises(DeliveryError) as refused_certificate:
            sender.send(BUNDLE)
        sender.close()
        assert not isinstance(refused_certificate.value, InDoubtDeliveryError), refused_certificate.value
        assert untrusted.requests == []
