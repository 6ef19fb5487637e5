"""PEM111_DELIVERY_MODE over real HTTP: async answers OK once stored and delivers after a target outage; sync
answers OK only once delivered, 2100 during an outage, and never delivers behind the sender's back.

Targets: the folder (an outage is a regular file where the folder should be) and a private RabbitMQ node
(:mod:`brokers`; an outage is a real broker shutdown). In-process tests cover what HTTP cannot produce: a
permanent refusal in sync mode, and a switch of mode between a failure and a resend.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from brokers import PrivateRabbitMQ, Received
from fhir_server import FhirServer
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from lxml import etree
from server_fixture import RunningServer, start_server
from test_outbox import Harness, block, fast_settings, unblock

from adaptor.delivery.conversion import bundle_text, convert_message
from adaptor.itk import rules as itk
from adaptor.itk.faults import ItkFault
from adaptor.itk.message import ItkMessage
from adaptor.store import AttemptOutcome, Claim, MessageStore, Status, utc_now

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
ITK = "urn:nhs-itk:ns:201005"
NS = {"s": SOAP11, "itk": ITK}

#: Fast retries and polling: an outage and its end fit in a test.
FAST = {
    "PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS,
    "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS,
    "PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS": "0.05",
    "PEM111_DELIVERY_BACKOFF_MAX_SECONDS": "0.2",
    "PEM111_DELIVERY_POLL_SECONDS": "0.05",
}


def post(server: RunningServer, raw: bytes) -> requests.Response:
    return requests.post(server.report_url, data=raw, headers={"Content-Type": "text/xml"}, timeout=60)


def answer(response: requests.Response) -> str:
    """``OK``, or ``fault <ErrorCode>``."""
    envelope = etree.fromstring(response.content)
    if response.status_code == 200:
        return envelope.findtext("s:Body/itk:SimpleMessageResponse", namespaces=NS) or ""
    return f"fault {envelope.findtext('.//itk:ToolkitErrorInfo/itk:ErrorCode', namespaces=NS)}"


def message_id_of(raw: bytes) -> str:
    return etree.fromstring(raw).findtext("s:Header/{http://www.w3.org/2005/08/addressing}MessageID", namespaces=NS)


def history(server: RunningServer, record_id: str) -> list[AttemptOutcome | None]:
    store = MessageStore(server.database_url)
    try:
        return [attempt.outcome for attempt in store.delivery_history(record_id)]
    finally:
        store.close()


def files_for(server: RunningServer, message_id: str) -> list[Path]:
    return [p for p in server.outbox_files() if message_id.encode() in p.read_bytes()]


def wait_for_a_worker_poll(server: RunningServer) -> str:
    """Queue a new message for ``server``'s workers, as an async server would store it, and wait until they
    have delivered it; returns its MessageID.

    A sync server's workers still poll the outbox. Once they have delivered this message they have polled it
    since the message was stored, and any held message is still held. A check that the workers leave a held
    message alone waits for this, not for a time that proves nothing on a slow machine.
    """
    queuing = Harness(fast_settings(server.data_dir.parent, database_url=server.database_url))
    try:
        message_id = queuing.accept().message_id  # stored pending; this harness's own worker never runs
    finally:
        queuing.close()
    server.wait_for_status(message_id)
    return message_id


@pytest.fixture
def blocked_async(tmp_path: Path) -> Iterator[RunningServer]:
    block(tmp_path / "outbox")
    server = start_server(tmp_path, **FAST)
    yield server
    server.stop()


@pytest.fixture
def blocked_sync(tmp_path: Path) -> Iterator[RunningServer]:
    block(tmp_path / "outbox")
    server = start_server(tmp_path, PEM111_DELIVERY_MODE="sync", **FAST)
    yield server
    server.stop()


# == folder target ===============================================================================================


def test_async_accepts_during_an_outage_and_delivers_after_it(blocked_async: RunningServer) -> None:
    server = blocked_async
    raws = [to_bytes(build_request()) for _ in range(5)]

    assert [answer(post(server, raw)) for raw in raws] == ["OK"] * 5

    ids = [message_id_of(raw) for raw in raws]
    for message_id in ids:  # each tried and failed at least once: the outage is real
        [stored] = server.wait_for_status(message_id, Status.RETRYING)
        assert stored.status_reason and "FileExistsError" in stored.status_reason
    unblock(server.outbox)
    for message_id in ids:
        [stored] = server.wait_for_status(message_id)
        outcomes = history(server, stored.id)
        assert outcomes[-1] is AttemptOutcome.DELIVERED and set(outcomes[:-1]) == {AttemptOutcome.FAILED}
        assert len(files_for(server, message_id)) == 1


def test_sync_answers_ok_only_once_delivered(tmp_path: Path) -> None:
    server = start_server(tmp_path, PEM111_DELIVERY_MODE="sync", **FAST)
    try:
        raw = to_bytes(build_request())
        message_id = message_id_of(raw)

        assert answer(post(server, raw)) == "OK"
        assert len(files_for(server, message_id)) == 1  # already there when the answer arrives: no waiting
        [stored] = server.stored(message_id)
        assert stored.status is Status.DELIVERED and history(server, stored.id) == [AttemptOutcome.DELIVERED]

        assert answer(post(server, raw)) == "OK"  # a resend of a delivered message: not delivered again
        assert history(server, stored.id) == [AttemptOutcome.DELIVERED]
        assert len(files_for(server, message_id)) == 1
    finally:
        server.stop()


def test_sync_outage_answers_2100_holds_the_message_and_the_resend_delivers_it(blocked_sync: RunningServer) -> None:
    server = blocked_sync
    raw = to_bytes(build_request())
    message_id = message_id_of(raw)

    assert answer(post(server, raw)) == "fault 2100"

    [held] = server.stored(message_id)
    assert held.status is Status.HELD and "FileExistsError" in held.status_reason
    unblock(server.outbox)
    # The target is back, and the server's workers poll every 0.05 s: they must still leave the message alone,
    # because the sender was told it failed.
    polled = wait_for_a_worker_poll(server)
    assert len(files_for(server, polled)) == 1
    [still_held] = server.stored(message_id)
    assert still_held.status is Status.HELD and history(server, held.id) == [AttemptOutcome.FAILED]
    assert files_for(server, message_id) == []

    assert answer(post(server, raw)) == "OK"  # the sender's retry: delivered now, synchronously

    assert len(files_for(server, message_id)) == 1
    [delivered] = server.stored(message_id)
    assert delivered.status is Status.DELIVERED and delivered.id == held.id  # one record, never two
    assert history(server, held.id) == [AttemptOutcome.FAILED, AttemptOutcome.DELIVERED]


# == a real broker ===============================================================================================


def broker_settings(broker: PrivateRabbitMQ, queue: str, protocol: str = "1.0") -> dict[str, str]:
    return {
        "PEM111_FORWARD_TARGET": broker.url,
        "PEM111_AMQP_QUEUE_NAME": queue,
        "PEM111_AMQP_PROTOCOL": protocol,
        "PEM111_AMQP_USERNAME": broker.username,
        "PEM111_AMQP_PASSWORD": broker.password,
        **FAST,
        # Fast retries, and enough of them to outlast a broker restart (several seconds).
        "PEM111_DELIVERY_MAX_ATTEMPTS": "10000",
    }


def consume(broker: PrivateRabbitMQ, queue: str, protocol: str, count: int) -> list[Received]:
    """Every message on ``queue`` (``count`` expected), checking that nothing more is there."""
    received = broker.consume(queue, protocol, count)
    assert broker.queue_depth(queue) == 0, "more messages on the queue than delivered"
    return received


def message_ids(received: list[Received]) -> Counter[str]:
    return Counter(str(message.properties["messageId"]) for message in received)


@pytest.mark.parametrize("protocol", ["1.0", "0-9-1"])
def test_async_broker_outage_accepts_and_delivers_after_the_restart(
    tmp_path: Path,
    rabbitmq: PrivateRabbitMQ,
    protocol: str,
) -> None:
    queue = rabbitmq.unique_queue()
    server = start_server(tmp_path, **broker_settings(rabbitmq, queue, protocol))
    try:
        before = to_bytes(build_request())
        assert answer(post(server, before)) == "OK"
        server.wait_for_status(message_id_of(before))  # the path works, and the queue exists

        rabbitmq.stop()
        during = [to_bytes(build_request()) for _ in range(5)]
        assert [answer(post(server, raw)) for raw in during] == ["OK"] * 5  # accepted while the broker is down
        for raw in during:
            [stored] = server.wait_for_status(message_id_of(raw), Status.RETRYING)
            assert stored.status_reason
        rabbitmq.start()

        ids = [message_id_of(raw) for raw in [before, *during]]
        for message_id in ids:
            server.wait_for_status(message_id)
        received = consume(rabbitmq, queue, protocol, len(ids))
    finally:
        server.stop()
    assert message_ids(received) == Counter(ids)  # each exactly once


def test_sync_broker_outage_answers_2100_and_puts_nothing_on_the_queue(
    tmp_path: Path,
    rabbitmq: PrivateRabbitMQ,
) -> None:
    queue = rabbitmq.unique_queue()
    server = start_server(tmp_path, PEM111_DELIVERY_MODE="sync", **broker_settings(rabbitmq, queue))
    try:
        raw = to_bytes(build_request())
        message_id = message_id_of(raw)
        rabbitmq.stop()

        assert answer(post(server, raw)) == "fault 2100"

        [held] = server.stored(message_id)
        assert held.status is Status.HELD
        rabbitmq.start()
        polled = wait_for_a_worker_poll(server)  # the workers poll, and must leave it alone: the sender was told no
        assert message_ids(consume(rabbitmq, queue, "1.0", 1)) == Counter([polled])  # the queue held nothing else
        assert server.stored(message_id)[0].status is Status.HELD

        assert answer(post(server, raw)) == "OK"  # the sender's retry, once the broker is back
        assert rabbitmq.queue_depth(queue) == 1  # on the queue before the answer
        received = consume(rabbitmq, queue, "1.0", 1)
        [delivered] = server.stored(message_id)
        outcomes = history(server, delivered.id)
    finally:
        server.stop()
    assert message_ids(received) == Counter([message_id])
    assert delivered.status is Status.DELIVERED and outcomes == [AttemptOutcome.FAILED, AttemptOutcome.DELIVERED]


# == in process: what HTTP cannot produce ========================================================================


def sync_harness(tmp_path: Path, **changes: object) -> Harness:
    return Harness(fast_settings(tmp_path, delivery_mode="sync", **changes))


def validated(harness: Harness, raw: bytes) -> ItkMessage:
    return itk.validate_request(itk.parse_request(raw, harness.settings), harness.settings, harness.allow_list)


def test_sync_permanent_refusal_is_dead_lettered_and_answered_2200(tmp_path: Path) -> None:
    with FhirServer() as endpoint:
        endpoint.reply(400, b"no")
        harness = sync_harness(tmp_path, forward_target=endpoint.url)
        try:
            with pytest.raises(ItkFault) as fault:
                harness.accept()
            [stored] = harness.store.list_messages()
        finally:
            harness.close()
        assert len(endpoint.requests) == 1
    assert fault.value.error_code == 2200
    assert stored.status is Status.DEAD_LETTER and "400" in stored.status_reason


def test_a_message_held_in_sync_mode_is_delivered_by_the_workers_after_a_switch_to_async(tmp_path: Path) -> None:
    """The sender was told to retry; when its retry reaches a server now in async mode, the retry is answered OK
    and the workers deliver the held message."""
    raw = to_bytes(build_request())
    sync = sync_harness(tmp_path)
    try:
        block(sync.outbox)
        with pytest.raises(ItkFault) as fault:
            sync.accept(raw)
        assert fault.value.error_code == 2100
        assert sync.worker.drain() == []  # held: no worker takes it
    finally:
        sync.close()

    unblock(sync.outbox)
    asynchronous = Harness(fast_settings(tmp_path))
    try:
        message = asynchronous.accept(raw)  # the resend: OK, nothing stored twice
        assert [o.status for o in asynchronous.worker.drain()] == [Status.DELIVERED]
        [stored] = asynchronous.store.find_by_message_id(message.message_id)
        assert [a.outcome for a in asynchronous.store.delivery_history(stored.id)] == [
            AttemptOutcome.FAILED,
            AttemptOutcome.DELIVERED,
        ]
    finally:
        asynchronous.close()


def test_an_interrupted_sync_delivery_is_held_for_the_resend(tmp_path: Path) -> None:
    """A sync server killed while the sender waited: no worker delivers the message (the sender got no OK);
    the sender's resend does, once, and the unfinished attempt is counted as a possible duplicate."""
    harness = sync_harness(tmp_path)
    try:
        raw = to_bytes(build_request())
        message = validated(harness, raw)
        # What the killed process left: the message stored with its synchronous claim, an attempt started.
        bundle, converted_at = bundle_text(convert_message(message)), utc_now()
        record_id, _ = harness.store.accept(
            message, raw, bundle, converted_at=converted_at, claim_for="killed-request", lease_seconds=0.0
        )
        claim = Claim.for_new_message(record_id, message, raw, bundle, converted_at, "killed-request")
        harness.store.start_attempt(claim, harness.forwarder.target, 0.0, None)

        assert harness.worker.drain() == []
        assert harness.record(message).status is Status.HELD

        harness.service.accept(message, raw)  # the resend
        stored = harness.record(message)
        assert stored.status is Status.DELIVERED
        assert [r.message_id for r in harness.store.possible_redeliveries()] == [message.message_id]
        assert json.loads(stored.bundle)["resourceType"] == "Bundle"
        assert len(harness.files()) == 1
    finally:
        harness.close()
