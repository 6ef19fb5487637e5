"""A send whose outcome is unknown is recorded as *in doubt* and counted among the store's possible redeliveries.

The reproduction from issue 13, made deterministic: the broker is hung (SIGSTOP) after the forwarder connected,
so the Bundle is written to the connection and no answer comes. The attempt is recorded as ``in_doubt`` (not
``failed``), retried as a transient failure, and once the broker is back and the message delivered, the store's
``possible_redeliveries()`` lists it; every copy the broker then holds is accounted for by the store's attempts.
For AMQP 1.0 and AMQP 0-9-1, with the real outbox and a real RabbitMQ.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from brokers import PrivateRabbitMQ
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes

from adaptor import composition
from adaptor.config import Settings
from adaptor.delivery.forwarders import Delivery
from adaptor.delivery.forwarders.amqp091 import Amqp091Forwarder
from adaptor.delivery.forwarders.amqp10 import Amqp10Forwarder
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
