"""The message store on a real SQLite file: idempotent accept, concurrent writers, durability, statuses."""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from adaptor.message import Address, ItkMessage
from adaptor.store import MessageStore, Status, StoreError


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


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'data' / 'messages.db'}"


@pytest.fixture
def store(database_url: str):
    store = MessageStore(database_url)
    store.open()
    yield store
    store.close()


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
    assert stored.status is Status.ACCEPTED and stored.status_reason is None
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


def test_status_updates_and_delivery_history(store: MessageStore) -> None:
    record_id, _ = store.accept(make_message(), b"x")

    store.set_status(record_id, Status.CONVERSION_FAILED, "no ClinicalDocument")
    failed = store.get(record_id)
    assert failed.status is Status.CONVERSION_FAILED and failed.status_reason == "no ClinicalDocument"

    store.record_conversion(record_id, '{"resourceType": "Bundle"}')
    converted = store.get(record_id)
    assert converted.status is Status.CONVERTED and converted.status_reason is None
    assert converted.bundle == '{"resourceType": "Bundle"}'

    store.record_delivery(record_id, "dir:/out", succeeded=False, detail="disk full")
    assert store.get(record_id).status is Status.DELIVERY_FAILED
    assert store.get(record_id).status_reason == "disk full"
    store.record_delivery(record_id, "dir:/out", succeeded=True)
    delivered = store.get(record_id)
    assert delivered.status is Status.DELIVERED and delivered.status_reason is None
    assert delivered.updated_at >= delivered.received_at

    history = store.delivery_history(record_id)
    assert [(a.target, a.succeeded, a.detail) for a in history] == [
        ("dir:/out", False, "disk full"),
        ("dir:/out", True, None),
    ]


def test_updating_an_unknown_record_is_an_error(store: MessageStore) -> None:
    with pytest.raises(StoreError):
        store.set_status(str(uuid.uuid4()), Status.DELIVERED)


def test_list_messages_newest_first_without_content(store: MessageStore) -> None:
    ids = [store.accept(make_message(), b"raw")[0] for _ in range(3)]
    store.set_status(ids[0], Status.DELIVERED)

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
    first.record_conversion(record_id, "{}")
    first.close()

    reopened = MessageStore(database_url)
    try:
        stored = reopened.get(record_id)  # open() happens on first use
        assert stored is not None and stored.raw == b"durable" and stored.status is Status.CONVERTED
        assert reopened.accept(message, b"durable") == (record_id, False)
    finally:
        reopened.close()


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
