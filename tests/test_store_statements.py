"""The store's hot statements, built once at import and bound per call: they select and write exactly what the
statements built per call did (same rows, same stored values), on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Executable, event, select, update
from test_store import LEASE, make_message

from adaptor.itk.documents import DocumentKeys
from adaptor.store import (
    CLAIM_CANDIDATES,
    AttemptOutcome,
    Claim,
    MessageStore,
    Status,
    outbox,
    utc_now,
)
from adaptor.store import statements as store_module
from adaptor.store.statements import _due


@pytest.fixture
def any_store(store: MessageStore) -> MessageStore:
    """The store on SQLite and on PostgreSQL (``tests/databases.py``)."""
    return store


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[MessageStore]:
    store = MessageStore(f"sqlite:///{tmp_path / 'data' / 'messages.db'}")
    store.open()
    yield store
    store.close()


def test_claim_candidates_are_the_due_rows_the_plain_query_selects(any_store: MessageStore) -> None:
    """The SQLite claim's candidates (one ordered index range per state) are the rows, in the order, of
    ``WHERE _due(now) ORDER BY next_attempt_at LIMIT n``, whatever the mix of states and times."""
    now = utc_now()
    states = [
        (Status.PENDING, -50, None),
        (Status.RETRYING, -40, None),
        (Status.DELIVERING, -45, -1),  # an expired lease: due
        (Status.DELIVERING, -44, +60),  # a live lease: not due
        (Status.HELD, -60, None),
        (Status.DELIVERED, -70, None),
        (Status.DEAD_LETTER, -80, None),
        (Status.PENDING, +30, None),  # not due yet
        (Status.RETRYING, +20, None),  # not due yet
    ]
    rows = []
    for round_ in range(3):  # more due rows of each state than one claim looks at
        for index, (state, due_in, lease_in) in enumerate(states):
            record_id, _ = any_store.accept(make_message(), b"x")
            rows.append(record_id)
            offset = round_ * 0.001 + index * 0.0001  # distinct times: no ties to order arbitrarily
            values = {
                "state": state.value,
                "next_attempt_at": now + timedelta(seconds=due_in + offset),
                "lease_expires_at": None if lease_in is None else now + timedelta(seconds=lease_in),
                "synchronous": 1 if index == 2 and round_ == 1 else 0,  # an abandoned synchronous delivery too
            }
            with any_store.engine.begin() as conn:
                conn.execute(update(outbox).where(outbox.c.record_id == record_id).values(**values))

    plain = (
        select(outbox.c.record_id, outbox.c.state, outbox.c.synchronous)
        .order_by(outbox.c.next_attempt_at)
        .limit(CLAIM_CANDIDATES)
    )
    with any_store.engine.connect() as conn:
        for moment in (now - timedelta(hours=1), now - timedelta(seconds=46), now, now + timedelta(hours=1)):
            expected = conn.execute(plain.where(_due(moment))).all()
            found = conn.execute(store_module._SELECT_CLAIM_CANDIDATES, {"b_now": moment}).all()
            assert found == expected
    assert len(expected) == CLAIM_CANDIDATES


def _prebuilt_statements() -> set[int]:
    statements = {id(value) for value in vars(store_module).values() if isinstance(value, Executable)}
    return statements | {id(statement) for statement in store_module._RELEASE.values()}


def test_the_worker_and_resend_paths_execute_only_statements_built_once(any_store: MessageStore) -> None:
    executed: list[object] = []
    event.listen(any_store.engine, "before_execute", lambda _conn, statement, *_rest: executed.append(statement))

    message = make_message()
    document = DocumentKeys("DOCUMENT-ID", "SET-ID", 1)  # looked up among the nullifications (and locked: PostgreSQL)
    record_id, _ = any_store.accept(message, b"x", document=document)
    assert any_store.accept(message, b"x", document=document) == (record_id, False)  # a resend: found by identity
    claim = any_store.claim_due("worker", LEASE)
    assert claim is not None
    attempt = any_store.start_attempt(claim, "dir:/out", LEASE, "{}")
    assert any_store.finish(
        claim,
        state=Status.RETRYING,
        outcome=AttemptOutcome.FAILED,
        target="dir:/out",
        attempt_id=attempt,
        error="down",
        next_attempt_at=utc_now() - timedelta(seconds=1),
    )
    again = any_store.claim_for_sender(record_id, "sync", LEASE)
    assert isinstance(again, Claim)
    assert any_store.claim_for_sender(record_id, "sync-copy", LEASE) is Status.DELIVERING
    any_store.finish(again, state=Status.DEAD_LETTER, outcome=AttemptOutcome.CONVERSION_FAILED, target="dir:/out")

    prebuilt = _prebuilt_statements()
    assert executed and all(id(statement) in prebuilt for statement in executed)


_SQLITE_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")


def test_times_bound_by_name_are_stored_as_the_column_type_stores_them(sqlite_store: MessageStore) -> None:
    """SQLite has no time type: a time bound without the column's type would be stored in another text form
    (``T``, ``+00:00``) and compare wrongly with the others."""
    record_id, _ = sqlite_store.accept(make_message(), b"x")
    claim = sqlite_store.claim_due("worker", LEASE)
    assert claim is not None
    attempt = sqlite_store.start_attempt(claim, "dir:/out", LEASE, "{}")
    later = utc_now() + timedelta(hours=1)
    sqlite_store.finish(
        claim,
        state=Status.RETRYING,
        outcome=AttemptOutcome.FAILED,
        target="dir:/out",
        attempt_id=attempt,
        next_attempt_at=later,
    )
    assert sqlite_store.get(record_id).next_attempt_at == later
    assert sqlite_store.retry_waiting_now() == 1
    deliver_claim = sqlite_store.claim_due("worker", LEASE)
    assert deliver_claim is not None
    attempt = sqlite_store.start_attempt(deliver_claim, "dir:/out", LEASE, None)
    sqlite_store.finish(
        deliver_claim, state=Status.DELIVERED, outcome=AttemptOutcome.DELIVERED, target="dir:/out", attempt_id=attempt
    )

    database = sqlite_store.engine.url.database
    assert database is not None
    with sqlite3.connect(database) as conn:
        times = conn.execute(
            "SELECT next_attempt_at, updated_at, delivered_at FROM outbox WHERE record_id = ?", (record_id,)
        ).fetchall()
        times += conn.execute(
            "SELECT started_at, finished_at, NULL FROM delivery_attempts WHERE message_record_id = ?", (record_id,)
        ).fetchall()
        times += conn.execute(
            "SELECT updated_at, received_at, NULL FROM messages WHERE id = ?", (record_id,)
        ).fetchall()
    values = [value for row in times for value in row if value is not None]
    assert len(values) == 9
    assert all(_SQLITE_TIME.match(value) for value in values), values
