"""Broker stopped under load (issue 13), short form: every copy at the consumer is accounted for by the store.

Three ``nhs111 serve`` replicas share one PostgreSQL database and deliver over AMQP 1.0 to one queue of a private
RabbitMQ node (:mod:`brokers`), four delivery threads each, with the default lease (120 s, so no takeover hides
anything). Sender threads keep them busy (:mod:`senders`); RabbitMQ is stopped gracefully while messages stream in
and started again. Once everything stored is delivered the queue is read to the end, every copy the broker kept:

* every message answered ``OK`` is there, and nothing that was never sent;
* each copy beyond the first of a MessageID is one the store lists for that message in ``possible_redeliveries()``
  (an attempt that wrote the message and got no answer, *in doubt*, or never finished, *interrupted*): the store's
  count of possible copies is an upper bound of what the consumer drops by ``messageId``.

Whether a send is in flight when the broker closes its connections is up to the moment; the accounting must hold
either way. The long form, at 50 messages a second with several stops, is ``python -m benchmarks.soak --only
brokerstop`` (figures in docs/benchmarks.md).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from brokers import PrivateRabbitMQ
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS
from senders import Stream, settled
from server_fixture import start_servers
from waiting import wait_until

from adaptor.store import MessageStore

REPLICAS = 3
SENDERS = 6
#: Messages answered OK before the stop, while the broker is down, and after it is back.
OK_EACH_PHASE = 30


def test_every_copy_at_the_consumer_is_accounted_for_when_the_broker_stops_under_load(
    tmp_path: Path, postgres_database: str, rabbitmq: PrivateRabbitMQ
) -> None:
    queue = rabbitmq.unique_queue("broker-stop")
    rabbitmq.declare_queue(queue)
    replicas = start_servers(
        tmp_path,
        REPLICAS,
        PEM111_DATABASE_URL=postgres_database,
        PEM111_FORWARD_TARGET=rabbitmq.url,
        PEM111_AMQP_QUEUE_NAME=queue,
        PEM111_AMQP_PROTOCOL="1.0",
        PEM111_AMQP_USERNAME=rabbitmq.username,
        PEM111_AMQP_PASSWORD=rabbitmq.password,
        PEM111_ITK_ODS_CODE_LIST=RECIPIENT_ODS,
        PEM111_ITK_DOS_ID_LIST=RECIPIENT_DOS,
        PEM111_DELIVERY_WORKERS="4",
        PEM111_DELIVERY_POLL_SECONDS="0.2",
        # Short retries: the test waits for the outage's backlog, not for the backoff (the lease stays 120 s).
        PEM111_DELIVERY_BACKOFF_MAX_SECONDS="2",
        PEM111_LOG_LEVEL="warning",
    )
    stream = Stream([replica.report_url for replica in replicas])
    try:
        stream.start(SENDERS)
        for phase in ("before the stop", "while the broker is down", "after the restart"):
            target = stream.ok_count() + OK_EACH_PHASE
            wait_until(lambda target=target: stream.ok_count() >= target, f"answers {phase}", 60)
            if phase == "before the stop":
                rabbitmq.stop()  # graceful: the broker closes every connection, sends in flight lose their answer
            elif phase == "while the broker is down":
                rabbitmq.start()
        stream.stop()
        wait_until(lambda: settled(postgres_database), "every stored message delivered", 60)
        depth = rabbitmq.queue_depth(queue)
        received = rabbitmq.consume_amqp10(queue, depth, timeout=30)
    finally:
        stream.stop()
        logs = [replica.log_text() for replica in replicas]
        for replica in replicas:
            replica.stop()

    store = MessageStore(postgres_database)
    try:
        listed = Counter[str]()
        for redelivery in store.possible_redeliveries():
            listed[redelivery.message_id] += redelivery.interrupted_attempts + redelivery.in_doubt_attempts
    finally:
        store.close()
    copies = Counter(str(message.properties["messageId"]) for message in received)
    duplicates = {message_id: n - 1 for message_id, n in copies.items() if n > 1}
    print(
        f"\nbroker stopped under load: {len(stream.sent)} sent, {len(stream.answered_ok)} answered OK, "
        f"{len(received)} copies at the consumer, {sum(duplicates.values())} duplicates, "
        f"{sum(listed.values())} possible copies listed by the store"
    )
    assert len(received) == depth
    assert stream.answered_ok <= set(copies)  # nothing answered OK is lost
    assert set(copies) <= stream.sent  # nothing that was never sent
    unlisted = {message_id: n for message_id, n in duplicates.items() if n > listed[message_id]}
    assert unlisted == {}, (unlisted, {message_id: listed[message_id] for message_id in unlisted})
    assert all("Traceback" not in log for log in logs)
