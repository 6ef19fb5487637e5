"""A claim whose store write failed is released as soon as the database is back, not after its lease.

Issue 13: a delivery thread of a live replica claimed a message, the database restarted, and the write recording
the outcome failed; the message then waited out the whole lease (120 s by default) before anyone retried it. Here
the lease is the default 120 s and a private PostgreSQL server (:mod:`postgres`) is really stopped and started:

* the Bundle reached the broker while the database was down: once the database is back the delivery thread records
  it as *delivered*, within seconds, and the consumer has one copy, with nothing left for the store to explain;
* the attempt could not even be recorded as started (nothing was sent): the claim is released once the database
  is back and the message is due again at once.

The first drives the outbox's own threads against a real RabbitMQ node held still (SIGSTOP) while the database is
stopped, so that the send completes exactly when the database is down; the second calls the deliverer directly,
with the database stopped between the claim and the attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from brokers import PrivateRabbitMQ
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from postgres import PrivatePostgres
from waiting import wait_until

from adaptor import composition
from adaptor.config import Settings
from adaptor.delivery.outbox import NOT_STARTED_ERROR, Deliverer
from adaptor.itk import rules as itk
from adaptor.store import AttemptOutcome, Status, StoreError

#: The production lease: what the message would otherwise wait for.
LEASE_SECONDS = 120
#: How soon after the database accepts connections again the outcome must be recorded.
RECORDED_WITHIN_SECONDS = 15.0


def settings_for(tmp_path: Path, database_url: str, **changes: object) -> Settings:
    return Settings(
        data_dir=str(tmp_path / "data"),
        database_url=database_url,
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
        delivery_lease_seconds=LEASE_SECONDS,
        delivery_poll_seconds=0.2,
        delivery_defer_seconds=0.0,
        delivery_workers=1,
    ).replace(**changes)


@pytest.fixture
def components_on(running_postgres: PrivatePostgres) -> Iterator[list[composition.Components]]:
    """Components built by a test, closed afterwards with the database running (closing waits for nothing)."""
    built: list[composition.Components] = []
    yield built
    running_postgres.start()
    for components in built:
        components.close()


def store_one(components: composition.Components) -> str:
    """Accept one new message as the front door would; its record id."""
    settings = components.settings
    raw = to_bytes(build_request())
    message = itk.validate_request(itk.parse_request(raw, settings), settings, components.allow_list)
    components.receiver.accept(message, raw)
    [stored] = components.store.find_by_message_id(message.message_id)
    return stored.id


def test_a_delivery_recorded_while_the_database_restarts_is_recorded_when_it_is_back(
    tmp_path: Path,
    running_postgres: PrivatePostgres,
    rabbitmq: PrivateRabbitMQ,
    components_on: list[composition.Components],
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = rabbitmq.unique_queue("store-outage")
    settings = settings_for(
        tmp_path,
        running_postgres.new_database(),
        amqp_broker=rabbitmq.url,
        amqp_queue_name=queue,
        amqp_username=rabbitmq.username,
        amqp_password=rabbitmq.password,
    )
    components = composition.build(settings)
    components_on.append(components)
    store, worker = components.store, components.worker
    caplog.set_level(logging.INFO, logger="adaptor.outbox")
    worker.start()

    # A first message opens the connection, so that the next send is what the held broker holds up.
    warm_up = store_one(components)
    wait_until(lambda: store.get(warm_up).status is Status.DELIVERED, "the first delivery")

    rabbitmq.pause()
    try:
        record_id = store_one(components)
        wait_until(
            lambda: [a.outcome for a in store.delivery_history(record_id)] == [None],
            "the attempt to start (its send waits for the held broker)",
        )
        running_postgres.stop()  # a real, fast shutdown: every connection in the pool is dead
    finally:
        rabbitmq.resume()
    # The broker answers now: the Bundle is delivered, and recording it fails while the database is down.
    wait_until(lambda: worker.deliverer.unrecorded == 1, "the outcome to be kept for the store's return")
    assert running_postgres.running is False

    running_postgres.start()
    back = time.monotonic()
    wait_until(
        lambda: store.get(record_id).status is Status.DELIVERED,
        "the delivery to be recorded once the database is back",
        RECORDED_WITHIN_SECONDS,
    )
    recorded_in = time.monotonic() - back

    stored = store.get(record_id)
    assert stored.lease_owner is None and stored.attempts == 1
    assert [a.outcome for a in store.delivery_history(record_id)] == [AttemptOutcome.DELIVERED]
    assert store.possible_redeliveries() == []  # nothing to explain: the consumer has one copy
    assert worker.deliverer.unrecorded == 0
    assert "delivery outcome recorded once the store answered" in caplog.text
    components.close()
    components_on.remove(components)

    received = rabbitmq.consume_amqp10(queue, 3, timeout=5.0)  # more than sent: see any extra copy
    delivered = [store.get(warm_up).message_id, stored.message_id]
    assert sorted(got.properties["messageId"] for got in received) == sorted(delivered)  # one copy each
    print(f"\noutcome recorded {recorded_in:.1f} s after the database was back (lease {LEASE_SECONDS} s)")


def test_an_attempt_that_could_not_start_releases_its_claim_when_the_database_is_back(
    tmp_path: Path,
    running_postgres: PrivatePostgres,
    components_on: list[composition.Components],
) -> None:
    settings = settings_for(
        tmp_path, running_postgres.new_database(), forward_target=f"dir:{tmp_path / 'outbox'}", delivery_workers=0
    )
    components = composition.build(settings)
    components_on.append(components)
    store, deliverer = components.store, components.worker.deliverer
    record_id = store_one(components)

    claim = store.claim_due("replica-a/worker-1", LEASE_SECONDS)
    assert claim is not None and claim.record_id == record_id
    running_postgres.stop()
    with pytest.raises(StoreError):
        deliverer.deliver(claim)  # nothing sent: the attempt could not be recorded as started
    assert deliverer.unrecorded == 1
    assert not (tmp_path / "outbox").exists() or list((tmp_path / "outbox").iterdir()) == []

    running_postgres.start()
    wait_until(lambda: _released(deliverer), "the claim to be released", RECORDED_WITHIN_SECONDS)

    # Due again at once, for any worker: no waiting out the 120 s lease.
    other = store.claim_due("replica-b/worker-1", LEASE_SECONDS)
    assert other is not None and other.record_id == record_id
    assert deliverer.deliver(other).status is Status.DELIVERED
    history = store.delivery_history(record_id)
    assert [(a.outcome, a.error) for a in history] == [
        (AttemptOutcome.FAILED, NOT_STARTED_ERROR),
        (AttemptOutcome.DELIVERED, None),
    ]
    assert store.possible_redeliveries() == []


def _released(deliverer: Deliverer) -> bool:
    """Writes the kept outcome (what a delivery thread does on each turn); whether nothing is left."""
    try:
        deliverer.record_unrecorded()
    except StoreError:
        return False
    return deliverer.unrecorded == 0
