"""The message store on a real SQLite file and on a fresh PostgreSQL database (the ``store`` and ``database_url``
fixtures of ``tests/databases.py``): idempotent accept, concurrent writers, durability, and the outbox: claims under
a lease, attempts and their history, holds for synchronous senders, replays."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from adaptor.itk.message import Address, ItkMessage
from adaptor.store import AttemptOutcome, Claim, MessageStore, Status, StoreError, utc_now

LEASE = 60.0


def make_message(*, message_id: str | None = None, tracking_id: str | None = None, digest: str | None = None):
    document = etree.Element("{urn:hl7-org:v3}ClinicalDocument")
    return ItkMessage(
        message_id=message_id or str(uuid.uuid4()).upper(),
        action="urn:nhs-itk:services:201005:SendNHS111Report-v2-0",
        tracking_id=tracking_id or str(uuid.uuid4()).upper(),
        service="urn:nhs-itk:services:201005:SendNHS111Report-v2-0",
        interaction="urn:nhs-itk:interaction:primaryOutofHourRecipientNHS111CDADocument-v2-0",
        event="referral-1",
        addresses=(
            Address("urn:nhs-uk:addressing:ods:EM396"),
            Address("26428", "2.16.840.1.113883.2.1.3.2.4.18.44"),
        ),
        ods_codes=("EM396",),
        dos_ids=("26428",),
        sender="urn:nhs-uk:identity:ods:RYE",
        sender_address=None,
        ack_requested=False,
        inf_ack_requested=False,
        username=None,
        digest=digest or uuid.uuid4().hex * 2,
        documents=(document,),
        selected=document,
    )


def test_accept_stores_the_message_and_request_bytes(store: MessageStore) -> None:
    message = make_message()
    before = datetime.now(UTC)

    record_id, is_new = store.accept(message, b"<raw request/>")

    assert is_new
    stored = store.get(record_id)
    assert stored is not None
    assert (stored.message_id, stored.tracking_id, stored.digest) == (
        message.message_id,
        message.tracking_id,
        message.digest,
    )
    assert stored.raw == b"<raw request/>"
    assert stored.status is Status.PENDING and stored.status_reason is None
    assert stored.attempts == 0 and stored.replays == 0 and stored.lease_owner is None
    assert stored.next_attempt_at == stored.received_at  # due at once
    assert stored.ods_codes == ("EM396",) and stored.dos_ids == ("26428",)
    assert stored.sender == "urn:nhs-uk:identity:ods:RYE"
    assert stored.received_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= stored.received_at <= datetime.now(UTC) + timedelta(seconds=1)
    assert stored.bundle is None


def test_identical_resend_returns_the_first_record(store: MessageStore) -> None:
    message = make_message()
    first, first_new = store.accept(message, b"<first/>")
    second, second_new = store.accept(message, b"<resend with a new WS-Security timestamp/>")

    assert (first_new, second_new) == (True, False)
    assert second == first
    assert len(store.find_by_message_id(message.message_id)) == 1
    assert store.get(first).raw == b"<first/>"  # the resend wrote nothing


def test_reused_message_id_with_other_content_is_a_new_message(store: MessageStore) -> None:
    message = make_message()
    other_content = replace(message, digest="f" * 64)
    other_tracking = replace(message, tracking_id=str(uuid.uuid4()).upper())

    ids = {store.accept(m, b"x")[0] for m in (message, other_content, other_tracking)}

    assert len(ids) == 3
    assert {m.id for m in store.find_by_message_id(message.message_id)} == ids


def deliver(store: MessageStore, claim: Claim, bundle: str | None = "{}") -> None:
    """What a worker does with a claim that the target accepts."""
    attempt = store.start_attempt(claim, "dir:/out", LEASE, bundle)
    assert store.finish(
        claim, state=Status.DELIVERED, outcome=AttemptOutcome.DELIVERED, target="dir:/out", attempt_id=attempt
    )


def test_claim_attempt_retry_and_delivery_history(store: MessageStore) -> None:
    record_id, _ = store.accept(make_message(), b"x")

    claim = store.claim_due("worker-a", LEASE)
    assert claim is not None and claim.record_id == record_id
    assert (claim.attempt, claim.bundle, claim.raw, claim.interrupted) == (1, None, b"x", 0)
    delivering = store.get(record_id)
    assert delivering.status is Status.DELIVERING and delivering.lease_owner == "worker-a"
    assert delivering.lease_expires_at > utc_now()
    assert store.claim_due("worker-b", LEASE) is None  # claimed: nobody else gets it

    attempt = store.start_attempt(claim, "dir:/out", LEASE, '{"resourceType": "Bundle"}')
    assert attempt is not None
    assert store.get(record_id).bundle == '{"resourceType": "Bundle"}'
    later = utc_now() + timedelta(hours=1)
    assert store.finish(
        claim,
        state=Status.RETRYING,
        outcome=AttemptOutcome.FAILED,
        target="dir:/out",
        attempt_id=attempt,
        error="disk full",
        next_attempt_at=later,
    )
    retrying = store.get(record_id)
    assert retrying.status is Status.RETRYING and retrying.status_reason == "disk full"
    assert retrying.next_attempt_at == later and retrying.lease_owner is None
    assert store.claim_due("worker-b", LEASE) is None  # not due for an hour

    assert store.retry_waiting_now() == 1  # the target is back: due now
    second = store.claim_due("worker-b", LEASE)
    assert second is not None and second.attempt == 2
    assert second.bundle == '{"resourceType": "Bundle"}'  # converted once, sent again as is
    deliver(store, second, bundle=None)

    delivered = store.get(record_id)
    assert delivered.status is Status.DELIVERED and delivered.status_reason is None
    assert delivered.delivered_at is not None and delivered.attempts == 2
    assert delivered.updated_at >= delivered.received_at
    history = store.delivery_history(record_id)
    assert [(a.owner, a.outcome, a.error) for a in history] == [
        ("worker-a", AttemptOutcome.FAILED, "disk full"),
        ("worker-b", AttemptOutcome.DELIVERED, None),
    ]
    assert all(a.finished_at is not None and a.finished_at >= a.started_at for a in history)
    assert store.claim_due("worker-a", LEASE) is None  # delivered is final


def test_an_attempt_that_ends_before_sending_is_logged_finished(store: MessageStore) -> None:
    record_id, _ = store.accept(make_message(), b"x")
    claim = store.claim_due("worker", LEASE)

    store.finish(
        claim,
        state=Status.DEAD_LETTER,
        outcome=AttemptOutcome.CONVERSION_FAILED,
        target="dir:/out",
        error="conversion failed: no ClinicalDocument",
    )

    stored = store.get(record_id)
    assert stored.status is Status.DEAD_LETTER and stored.status_reason == "conversion failed: no ClinicalDocument"
    [attempt] = store.delivery_history(record_id)
    assert attempt.outcome is AttemptOutcome.CONVERSION_FAILED and attempt.finished_at is not None


def test_messages_are_claimed_oldest_due_first(store: MessageStore) -> None:
    ids = [store.accept(make_message(), b"x")[0] for _ in range(3)]
    claimed = [store.claim_due("worker", LEASE) for _ in range(3)]
    assert [c.record_id for c in claimed] == ids
    assert store.claim_due("worker", LEASE) is None


def test_every_message_is_claimed_by_exactly_one_of_many_workers(database_url: str) -> None:
    """Eight workers, each with its own store (connection pool, as separate processes would have), race for
    the same 120 messages: every message is claimed once."""
    stores = [MessageStore(database_url) for _ in range(8)]
    ids = {stores[0].accept(make_message(), b"x")[0] for _ in range(120)}
    claims: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(stores))

    def work(index: int, store: MessageStore) -> None:
        try:
            start.wait()
            while (claim := store.claim_due(f"worker-{index}", LEASE)) is not None:
                with lock:
                    claims.append((claim.record_id, claim.owner))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for each in stores:
        each.close()

    assert errors == []
    assert sorted(record_id for record_id, _ in claims) == sorted(ids)
    assert len({owner for _, owner in claims}) > 1  # they really raced


def test_an_expired_lease_is_taken_over_and_the_unfinished_attempt_counted(store: MessageStore) -> None:
    """A worker that died between sending and recording: its lease expires, the next claim closes its attempt
    as interrupted and reports a possible redelivery; the dead worker can no longer release the message."""
    record_id, _ = store.accept(make_message(message_id="uuid:CRASHED"), b"x")
    dead = store.claim_due("dead-worker", 0.0)
    assert store.start_attempt(dead, "dir:/out", 0.0, "{}") is not None  # sent, then the process died

    taken = store.claim_due("next-worker", LEASE)

    assert taken is not None and taken.record_id == record_id
    assert (taken.attempt, taken.interrupted, taken.bundle) == (2, 1, "{}")
    assert store.possible_redeliveries() == []  # not delivered (again) yet
    assert store.start_attempt(dead, "dir:/out", LEASE, None) is None  # the dead owner's claim is gone
    deliver(store, taken, bundle=None)
    assert not store.finish(
        dead, state=Status.RETRYING, outcome=AttemptOutcome.FAILED, target="dir:/out", error="late"
    )  # a late writer cannot undo the delivery
    assert store.get(record_id).status is Status.DELIVERED

    [redelivery] = store.possible_redeliveries()
    assert (redelivery.record_id, redelivery.message_id, redelivery.interrupted_attempts) == (
        record_id,
        "uuid:CRASHED",
        1,
    )
    outcomes = [a.outcome for a in store.delivery_history(record_id)]
    assert outcomes[:2] == [AttemptOutcome.INTERRUPTED, AttemptOutcome.DELIVERED]


def test_a_live_lease_is_respected(store: MessageStore) -> None:
    store.accept(make_message(), b"x")
    assert store.claim_due("worker-a", LEASE) is not None
    assert store.claim_due("worker-b", LEASE) is None


def test_a_synchronous_claim_is_never_delivered_by_a_worker(store: MessageStore) -> None:
    """Sync mode: the request's own claim, even expired (its process died while the sender waited), is held for
    the sender's resend, which may claim it; in async mode the resend hands it to the workers."""
    message = make_message()
    record_id, is_new = store.accept(message, b"x", "{}", claim_for="sync-request", lease_seconds=0.0)
    assert is_new
    claimed = store.get(record_id)
    assert (claimed.status, claimed.lease_owner, claimed.attempts) == (Status.DELIVERING, "sync-request", 1)
    claim = Claim.for_new_message(record_id, message, b"x", "{}", claimed.converted_at, "sync-request")
    store.start_attempt(claim, "dir:/out", 0.0, None)

    assert store.claim_due("worker", LEASE) is None
    held = store.get(record_id)
    assert held.status is Status.HELD and "interrupted" in held.status_reason
    assert store.claim_due("worker", LEASE) is None  # held stays held

    resend = store.claim_for_sender(record_id, "sync-resend", LEASE)
    assert isinstance(resend, Claim) and resend.synchronous and resend.bundle == "{}"
    assert store.claim_for_sender(record_id, "sync-copy", LEASE) is Status.DELIVERING  # a concurrent copy
    store.finish(resend, state=Status.HELD, outcome=AttemptOutcome.FAILED, target="dir:/out", error="down")

    assert store.requeue_held(record_id)  # async mode now: the resend goes to the workers
    queued = store.get(record_id)
    assert (queued.status, queued.attempts) == (Status.PENDING, 0)
    deliver(store, store.claim_due("worker", LEASE))
    assert not store.requeue_held(record_id)
    assert store.claim_for_sender(record_id, "sync-late", LEASE) is Status.DELIVERED


def test_replay_redelivers_the_stored_bundle_and_keeps_the_history(store: MessageStore) -> None:
    delivered_id, _ = store.accept(make_message(), b"x", '{"the": "bundle"}')
    deliver(store, store.claim_due("worker", LEASE))
    busy_id, _ = store.accept(make_message(), b"x", "{}")
    store.claim_due("worker", LEASE)
    rejected_id, _ = store.reject(make_message(), b"x", "conversion failed: /ClinicalDocument: no")

    results = store.replay([delivered_id, busy_id, rejected_id, str(uuid.uuid4())])

    assert [(r.record_id, r.previous, r.requeued, r.bundle_version) for r in results] == [
        (delivered_id, Status.DELIVERED, True, 1),
        (busy_id, Status.DELIVERING, False, 1),  # being delivered right now: left alone
        (rejected_id, Status.REJECTED, False, None),  # nothing to redeliver
    ]
    assert "reconvert" in (results[2].skipped or "")
    replayed = store.get(delivered_id)
    assert (replayed.status, replayed.attempts, replayed.replays) == (Status.PENDING, 0, 1)
    assert (replayed.bundle, replayed.bundle_version) == ('{"the": "bundle"}', 1)  # the same Bundle
    assert len(store.delivery_history(delivered_id)) == 1
    again = store.claim_due("worker", LEASE)
    assert again.record_id == delivered_id and again.attempt == 1 and again.bundle == '{"the": "bundle"}'
    assert store.get(rejected_id).status is Status.REJECTED


def test_a_reconverted_bundle_is_the_next_version_and_each_attempt_records_its_version(store: MessageStore) -> None:
    first_conversion = utc_now()
    record_id, _ = store.accept(make_message(), b"x", '{"v": 1}', converted_at=first_conversion)
    deliver(store, store.claim_due("worker", LEASE))
    later = utc_now()

    result = store.replay_reconverted(record_id, '{"v": 2}', later)

    assert result is not None and (result.requeued, result.bundle_version, result.previous) == (
        True,
        2,
        Status.DELIVERED,
    )
    stored = store.get(record_id)
    assert (stored.bundle, stored.bundle_version, stored.converted_at) == ('{"v": 2}', 2, later)
    claim = store.claim_due("worker", LEASE)
    assert (claim.bundle, claim.bundle_version, claim.converted_at) == ('{"v": 2}', 2, later)
    deliver(store, claim)
    assert [a.bundle_version for a in store.delivery_history(record_id)] == [1, 2]
    assert store.replay_reconverted(str(uuid.uuid4()), "{}", later) is None


def test_a_rejected_message_is_kept_never_claimed_and_adopts_a_bundle_once(store: MessageStore) -> None:
    message = make_message()
    record_id, is_new = store.reject(message, b"<raw/>", "conversion failed: /ClinicalDocument/x: bad")
    assert is_new
    assert store.reject(message, b"<raw/>", "again")[0] == record_id  # a resend finds it
    assert store.accept(message, b"<raw/>", "{}") == (record_id, False)

    stored = store.get(record_id)
    assert (stored.status, stored.status_reason, stored.raw, stored.bundle) == (
        Status.REJECTED,
        "conversion failed: /ClinicalDocument/x: bad",
        b"<raw/>",
        None,
    )
    assert store.state_of(record_id) is Status.REJECTED
    assert store.claim_due("worker", LEASE) is None
    assert store.claim_for_sender(record_id, "sync", LEASE) is Status.REJECTED
    assert not store.requeue_held(record_id)
    assert store.list_messages(statuses=[Status.REJECTED])[0].id == record_id

    assert store.adopt_bundle(record_id, '{"now": "converts"}', utc_now())
    assert not store.adopt_bundle(record_id, "{}", utc_now())  # once
    adopted = store.get(record_id)
    assert (adopted.status, adopted.bundle, adopted.bundle_version) == (Status.PENDING, '{"now": "converts"}', 1)
    assert store.claim_due("worker", LEASE).bundle == '{"now": "converts"}'


def test_record_ids_and_counts_by_status(store: MessageStore) -> None:
    ids = [store.accept(make_message(), b"x")[0] for _ in range(3)]
    claim = store.claim_due("worker", LEASE)
    store.finish(claim, state=Status.DEAD_LETTER, outcome=AttemptOutcome.REJECTED, target="t", error="HTTP 422")

    assert store.record_ids(Status.DEAD_LETTER) == [ids[0]]
    assert store.record_ids(Status.PENDING) == ids[1:]
    counts = store.count_by_status()
    assert counts[Status.PENDING] == 2 and counts[Status.DEAD_LETTER] == 1 and counts[Status.DELIVERED] == 0
    assert set(counts) == set(Status)


def test_claiming_an_unknown_record_is_an_error(store: MessageStore) -> None:
    with pytest.raises(StoreError):
        store.claim_for_sender(str(uuid.uuid4()), "sync", LEASE)


def test_list_messages_newest_first_without_content(store: MessageStore) -> None:
    ids = []
    for _ in range(3):
        ids.append(store.accept(make_message(), b"raw")[0])
        time.sleep(0.002)  # distinct received_at values
    deliver(store, store.claim_due("worker", LEASE))

    listed = store.list_messages()
    assert [m.id for m in listed] == list(reversed(ids))
    assert all(m.raw is None and m.bundle is None for m in listed)
    assert [m.id for m in store.list_messages(statuses=[Status.DELIVERED])] == [ids[0]]
    assert len(store.list_messages(limit=2)) == 2


def test_many_threads_accepting_at_once(store: MessageStore) -> None:
    """Eight writer threads, each storing its own messages twice and a shared one: one record per message."""
    shared = make_message()
    own = [[make_message() for _ in range(25)] for _ in range(8)]
    results: list[tuple[str, str, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(own))

    def work(messages: list[ItkMessage]) -> None:
        try:
            start.wait()
            for message in [*messages, shared, *messages]:
                record_id, is_new = store.accept(message, b"<request/>" * 100)
                with lock:
                    results.append((message.message_id, record_id, is_new))
        except BaseException as exc:  # collected: an assertion in a thread would be lost
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(messages,)) for messages in own]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    new_records = [r for r in results if r[2]]
    assert len(new_records) == 8 * 25 + 1
    by_message: dict[str, set[str]] = {}
    for message_id, record_id, _ in results:
        by_message.setdefault(message_id, set()).add(record_id)
    assert all(len(record_ids) == 1 for record_ids in by_message.values())
    assert len(store.list_messages(limit=1000)) == 8 * 25 + 1


def test_committed_records_survive_reopening(database_url: str) -> None:
    first = MessageStore(database_url)
    first.open()
    message = make_message()
    record_id, _ = first.accept(message, b"durable")
    deliver(first, first.claim_due("worker", LEASE))
    first.close()

    reopened = MessageStore(database_url)
    try:
        stored = reopened.get(record_id)  # open() happens on first use
        assert stored is not None and stored.raw == b"durable" and stored.status is Status.DELIVERED
        assert reopened.accept(message, b"durable") == (record_id, False)
    finally:
        reopened.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_runs_in_wal_mode(store: MessageStore) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_an_unusable_database_raises_store_error_on_every_call(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("a file, so no database can be created below it")
    store = MessageStore(f"sqlite:///{not_a_folder / 'messages.db'}")

    with pytest.raises(StoreError):
        store.open()
    with pytest.raises(StoreError):
        store.accept(make_message(), b"x")
    store.close()


def test_a_database_of_another_layout_is_refused_by_name(tmp_path: Path) -> None:
    """``create_all`` leaves existing tables alone: a database from an earlier layout must not fail later, on
    every insert, with an obscure constraint error."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE delivery_attempts (id INTEGER PRIMARY KEY, attempted_at TEXT NOT NULL)")
    store = MessageStore(f"sqlite:///{path}")
    with pytest.raises(StoreError, match="incompatible layout.*delivery_attempts"):
        store.open()
    store.close()
