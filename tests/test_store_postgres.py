"""The message store on PostgreSQL: what only PostgreSQL has: claims with ``FOR UPDATE SKIP LOCKED``, a pool sized
from the settings, ``bytea`` and ``timestamptz`` columns, and a server that refuses NUL characters.

Every store test of ``tests/test_store.py`` runs on PostgreSQL too, through the ``database_url`` fixture of
``tests/databases.py``. The SQLite-only tests (WAL mode, a file that cannot be created) stay in ``test_store.py``;
their PostgreSQL counterparts are here.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError
from test_store import LEASE, deliver, make_message

from adaptor.config import Settings
from adaptor.store import (
    POOL_MARGIN,
    AttemptOutcome,
    MessageStore,
    Rejection,
    Status,
    StoreError,
    sqlalchemy_url,
)
from adaptor.store.engine import _describe


@pytest.fixture
def database_url(postgres_database: str) -> str:
    """Overrides ``databases.database_url``: the tests here run on a fresh PostgreSQL database only."""
    return postgres_database


@pytest.fixture
def second_store(database_url: str) -> Iterator[MessageStore]:
    """Another store on the same database: another pool, as another replica would have."""
    other = MessageStore(database_url)
    yield other
    other.close()


# -- the claim ------------------------------------------------------------------------------------------------


def test_the_worker_claim_locks_with_skip_locked(store: MessageStore) -> None:
    statements: list[str] = []
    event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    store.accept(make_message(), b"x")

    assert store.claim_due("worker", LEASE) is not None

    [locking] = [s for s in statements if "FOR UPDATE" in s]
    assert "FOR UPDATE SKIP LOCKED" in locking and "FROM outbox" in locking and "LIMIT" in locking


def test_a_row_locked_by_another_worker_is_passed_over_without_waiting(
    store: MessageStore,
    second_store: MessageStore,
) -> None:
    """While one worker's claim transaction holds the oldest due message, another takes the next one at once
    (no waiting for the lock, no lost race), and the locked one stays for its holder."""
    first, _ = store.accept(make_message(), b"x")
    second, _ = store.accept(make_message(), b"x")
    holder = psycopg.connect(_libpq(store), autocommit=False)
    try:
        holder.execute("SELECT record_id FROM outbox WHERE record_id = %s FOR UPDATE", (first,))
        started = time.monotonic()
        claim = second_store.claim_due("worker-b", LEASE)
        elapsed = time.monotonic() - started
        assert claim is not None and claim.record_id == second
        assert elapsed < 10.0  # not blocked on the lock, which is held until the test ends
        assert second_store.claim_due("worker-b", LEASE) is None  # the only other due row is locked
    finally:
        holder.rollback()
        holder.close()
    taken = store.claim_due("worker-a", LEASE)
    assert taken is not None and taken.record_id == first


def test_eight_workers_on_one_outbox_claim_each_message_once(database_url: str) -> None:
    """Eight workers, each with its own pool (as eight replicas would have), claim and finish 240 messages that
    keep arriving while they work: every message is claimed exactly once and delivered exactly once."""
    producer = MessageStore(database_url)
    workers = [MessageStore(database_url) for _ in range(8)]
    total = 240
    ids: set[str] = set()
    claims: list[tuple[str, str]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    produced = threading.Event()
    start = threading.Barrier(len(workers) + 1)

    def produce() -> None:
        try:
            start.wait()
            for _ in range(total):
                record_id, _ = producer.accept(make_message(), b"<request/>")
                with lock:
                    ids.add(record_id)
        except BaseException as exc:
            errors.append(exc)
        finally:
            produced.set()

    def work(index: int, worker: MessageStore) -> None:
        try:
            start.wait()
            while True:
                finished = produced.is_set()  # before looking: then nothing found means nothing left
                claim = worker.claim_due(f"worker-{index}", LEASE)
                if claim is None:
                    if finished:
                        return
                    time.sleep(0.02)  # nothing due yet: the producer is behind
                    continue
                with lock:
                    claims.append((claim.record_id, claim.owner))
                deliver(worker, claim)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=work, args=(i, w)) for i, w in enumerate(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert errors == []
        assert len(ids) == total
        claimed = [record_id for record_id, _ in claims]
        assert len(claimed) == len(set(claimed)) == total  # each once
        assert set(claimed) == ids
        assert len({owner for _, owner in claims}) > 1  # they really shared the work
        assert producer.count_by_status()[Status.DELIVERED] == total
        for record_id in list(ids)[:50]:
            assert [a.outcome for a in producer.delivery_history(record_id)] == [AttemptOutcome.DELIVERED]
    finally:
        for each in (producer, *workers):
            each.close()


# -- types and values -------------------------------------------------------------------------------------------


def test_columns_are_bytea_and_timestamptz(store: MessageStore) -> None:
    with store.engine.connect() as conn:
        types = dict(
            conn.execute(
                text(
                    "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = current_schema()"
                )
            ).all()
        )
    assert types["messages.raw"] == "bytea"
    assert types["messages.bundle"] == "text"
    for column in ("messages.received_at", "outbox.next_attempt_at", "delivery_attempts.started_at"):
        assert types[column] == "timestamp with time zone"


def test_a_large_binary_request_comes_back_byte_for_byte(store: MessageStore) -> None:
    raw = bytes(range(256)) * 40_000  # 10 MB, every byte value, NUL included
    record_id, _ = store.accept(make_message(), raw)
    assert store.get(record_id).raw == raw
    claim = store.claim_due("worker", LEASE)
    assert claim is not None and claim.raw == raw


def test_times_are_utc_whatever_the_session_time_zone(database_url: str) -> None:
    """A URL may set another session time zone; times still come back as UTC instants."""
    tokyo = MessageStore(f"{database_url}?options=-c%20TimeZone%3DAsia/Tokyo")
    try:
        before = datetime.now(UTC)
        record_id, _ = tokyo.accept(make_message(), b"x")
        stored = tokyo.get(record_id)
        assert stored.received_at.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=5) <= stored.received_at <= datetime.now(UTC) + timedelta(seconds=5)
    finally:
        tokyo.close()


def test_nul_characters_in_texts_are_dropped_not_fatal(store: MessageStore) -> None:
    """PostgreSQL text cannot hold NUL: an error quoting a target's reply, or an identifier read from a refused
    request, must still be recorded rather than fail the write (and redeliver the message)."""
    record_id, _ = store.accept(make_message(), b"x")
    claim = store.claim_due("worker", LEASE)
    attempt = store.start_attempt(claim, "http://target", LEASE, "{}")
    assert store.finish(
        claim,
        state=Status.RETRYING,
        outcome=AttemptOutcome.FAILED,
        target="http://target",
        attempt_id=attempt,
        error="HTTP 502: bad\x00gateway",
        next_attempt_at=datetime.now(UTC),
    )
    assert store.get(record_id).status_reason == "HTTP 502: badgateway"
    store.record_rejection(Rejection("C4", 1000, "refused", "ID-1", message_id="uuid:\x00A", sender_ods="X\x00"))
    [rejection] = store.list_rejections()
    assert (rejection.message_id, rejection.sender_ods) == ("uuid:A", "X")


def test_a_duplicate_is_found_through_the_unique_constraint(
    store: MessageStore,
    second_store: MessageStore,
) -> None:
    """Two replicas storing the same resend at once: one record, and both callers get its id."""
    message = make_message()
    results: list[tuple[str, bool]] = []
    start = threading.Barrier(8)

    def accept(target: MessageStore) -> None:
        start.wait()
        results.append(target.accept(message, b"x"))

    threads = [threading.Thread(target=accept, args=(s,)) for s in [store, second_store] * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({record_id for record_id, _ in results}) == 1
    assert sorted(is_new for _, is_new in results) == [False] * 7 + [True]


# -- configuration and failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "driver"),
    [
        ("postgresql://u:p@db:5432/nhs111", "postgresql+psycopg"),
        ("postgres://u:p@db/nhs111", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/nhs111", "postgresql+psycopg"),
        ("sqlite:////var/lib/nhs111/messages.db", "sqlite"),
    ],
)
def test_database_urls_name_psycopg_3(given: str, driver: str) -> None:
    url = sqlalchemy_url(given)
    assert url.drivername == driver
    assert url.database in ("nhs111", "/var/lib/nhs111/messages.db")


def test_the_pool_is_sized_from_the_settings(database_url: str) -> None:
    settings = Settings(database_url=database_url, server_threads=5, delivery_workers=3)
    sized = MessageStore.from_settings(settings)
    try:
        assert sized.is_postgresql
        assert sized.engine.pool.size() == 5 + 3 + POOL_MARGIN  # type: ignore[attr-defined]
        assert sized.engine.pool._max_overflow == 0  # type: ignore[attr-defined]
    finally:
        sized.close()
    # A postgres:// URL, as hosting platforms give them, works as it is.
    platform_style = MessageStore(database_url.replace("postgresql://", "postgres://", 1))
    try:
        assert platform_style.count_messages() == 0
    finally:
        platform_style.close()


def test_an_unreachable_server_raises_store_error_on_every_call() -> None:
    with socket_closed_port() as port:
        unreachable = MessageStore(f"postgresql://postgres@127.0.0.1:{port}/nhs111")
        assert not unreachable.open_if_available()  # logged, not raised: the service starts anyway
        with pytest.raises(StoreError, match="cannot open the message store"):
            unreachable.accept(make_message(), b"x")
        with pytest.raises(StoreError):
            unreachable.claim_due("worker", LEASE)
        unreachable.close()


def test_a_database_of_another_layout_is_refused_by_name(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE delivery_attempts (id SERIAL PRIMARY KEY, attempted_at TEXT NOT NULL)")
    other = MessageStore(database_url)
    with pytest.raises(StoreError, match="incompatible layout.*delivery_attempts"):
        other.open()
    other.close()


def test_database_errors_are_described_without_row_details() -> None:
    """PostgreSQL's DETAIL line can quote a whole failing row (the request included): only the first line of a
    driver error reaches a log or an answer."""
    original = psycopg.errors.NotNullViolation(
        'null value in column "digest" violates not-null constraint\nDETAIL:  Failing row contains (secret)'
    )
    described = _describe(IntegrityError("INSERT ...", {}, original))
    assert "not-null" in described and "secret" not in described and "DETAIL" not in described


# -- helpers --------------------------------------------------------------------------------------------------------


def _libpq(target: MessageStore) -> str:
    return target.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


@contextmanager
def socket_closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, never listening, for the duration)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])
