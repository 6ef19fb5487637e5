"""Acceptance for issue 6: two ``nhs111 serve`` replicas on one PostgreSQL database deliver every message once.

Two real server processes share a fresh database on the shared PostgreSQL server and deliver to one queue of a
private RabbitMQ node (:mod:`brokers`), whose consumer sees every copy (a folder target would hide an identical
second delivery). Both start at the same moment on the empty database, so they also race to create the schema.
A pool of sender threads posts 500 distinct messages, alternately to each replica. Then:

* every request is answered ``OK``;
* the queue holds exactly 500 messages, one per MessageID (the ``messageId`` application property);
* the shared store has each message delivered after exactly one attempt, made by one worker, and both replicas'
  workers took part.

The timings (sending, and until the last delivery) are printed (``pytest -s``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from brokers import PrivateRabbitMQ
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from lxml import etree
from server_fixture import start_servers
from sqlalchemy import select

from adaptor.store import AttemptOutcome, MessageStore, Status, delivery_attempts, messages, migrations

MESSAGES = 500
SENDERS = 8
DELIVERY_TIMEOUT_SECONDS = 120.0
NS = {"s": "http://schemas.xmlsoap.org/soap/envelope/", "a": "http://www.w3.org/2005/08/addressing"}
ITK = "urn:nhs-itk:ns:201005"


def send(url: str, raw: bytes, session: requests.Session) -> str:
    """Post one request; the ITK answer's text (``OK``) or what went wrong."""
    response = session.post(url, data=raw, headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=60)
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    return etree.fromstring(response.content).findtext(f"s:Body/{{{ITK}}}SimpleMessageResponse", namespaces=NS) or ""


def test_two_replicas_on_one_postgresql_database_deliver_each_message_exactly_once(
    tmp_path: Path,
    postgres_database: str,
    rabbitmq: PrivateRabbitMQ,
) -> None:
    queue = rabbitmq.unique_queue("replicas")
    rabbitmq.declare_queue(queue)
    settings = {
        "PEM111_DATABASE_URL": postgres_database,
        "PEM111_FORWARD_TARGET": rabbitmq.url,
        "PEM111_AMQP_QUEUE_NAME": queue,
        "PEM111_AMQP_PROTOCOL": "1.0",
        "PEM111_AMQP_USERNAME": rabbitmq.username,
        "PEM111_AMQP_PASSWORD": rabbitmq.password,
        "PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS,
        "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS,
        "PEM111_DELIVERY_WORKERS": "4",
        "PEM111_DELIVERY_POLL_SECONDS": "0.2",
        "PEM111_LOG_LEVEL": "warning",
    }
    requests_by_id: dict[str, bytes] = {}
    for _ in range(MESSAGES):
        raw = to_bytes(build_request())
        message_id = etree.fromstring(raw).findtext("s:Header/a:MessageID", namespaces=NS)
        assert message_id
        requests_by_id[message_id] = raw
    assert len(requests_by_id) == MESSAGES

    replicas = start_servers(tmp_path, 2, **settings)
    local = threading.local()

    def post(job: tuple[int, bytes]) -> str:
        index, raw = job
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return send(replicas[index % 2].report_url, raw, local.session)

    store = MessageStore(postgres_database)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(SENDERS) as pool:
            answers = list(pool.map(post, enumerate(requests_by_id.values())))
        sent_in = time.monotonic() - started

        deadline = time.monotonic() + DELIVERY_TIMEOUT_SECONDS
        while store.count_by_status()[Status.DELIVERED] < MESSAGES and time.monotonic() < deadline:
            time.sleep(0.1)
        delivered_in = time.monotonic() - started
        counts = store.count_by_status()

        received = rabbitmq.consume_amqp10(queue, MESSAGES + 50, timeout=15)  # more than sent: see any extra
        with store.engine.connect() as conn:
            attempts = conn.execute(
                select(messages.c.message_id, delivery_attempts.c.owner, delivery_attempts.c.outcome).join(
                    messages, messages.c.id == delivery_attempts.c.message_record_id
                )
            ).all()
        schema = store.schema_state()
    finally:
        store.close()
        logs = [replica.log_text() for replica in replicas]
        for replica in replicas:
            replica.stop()

    by_message: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for message_id, owner, outcome in attempts:
        by_message[message_id].append((owner, outcome))
    # Owners are host/pid/random/worker-N.
    by_replica = Counter(tries[0][0].split("/")[1] for tries in by_message.values())
    print(
        f"\n{MESSAGES} messages to 2 replicas ({SENDERS} sender threads, 4 delivery threads each, one PostgreSQL "
        f"database): all answered in {sent_in:.1f} s ({MESSAGES / sent_in:.0f}/s), all delivered "
        f"{delivered_in:.1f} s after the first was sent; deliveries per replica: "
        f"{sorted(by_replica.values(), reverse=True)}; {len(received)} messages on the queue"
    )
    assert Counter(answers) == {"OK": MESSAGES}, Counter(answers).most_common(3)
    assert counts[Status.DELIVERED] == MESSAGES == sum(counts.values()), counts

    copies = Counter(str(message.properties["messageId"]) for message in received)
    assert len(received) == MESSAGES and set(copies) == set(requests_by_id)
    assert max(copies.values()) == 1  # each delivered exactly once

    assert set(by_message) == set(requests_by_id)
    # One attempt per message, by one worker, and it delivered; both replicas' workers took part.
    assert all(tries == [(tries[0][0], AttemptOutcome.DELIVERED.value)] for tries in by_message.values())
    assert set(by_replica) == {str(replica.process.pid) for replica in replicas}, by_replica

    # Created once: each step recorded once.
    assert schema.version == migrations.head_version() and len(schema.history) == len(migrations.STEPS)
    assert all("Traceback" not in log for log in logs)
