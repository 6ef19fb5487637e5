"""The store's SQL, built once at import: the joins and columns the reads share, the conditions that make a
message due, and the statements the request path and the outbox workers run on every call.

The statements are executed with named parameters that each call binds (``conn.execute(statement, {"b_now": now,
...})``); ``tests/test_store_statements.py`` checks that the worker and resend paths run nothing else.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.sql.elements import BindParameter

from adaptor.store.index import BUNDLE_COLUMNS
from adaptor.store.records import AttemptOutcome, Status
from adaptor.store.schema import (
    bundle_versions,
    delivery_attempts,
    message_index,
    messages,
    nullifications,
    nullified_messages,
    outbox,
)

#: How many due messages one claim looks at (another worker may take some of them first), and how many times it
#: looks again when other workers took them all.
CLAIM_CANDIDATES = 8
CLAIM_ROUNDS = 3

#: A listing returns every column except the two potentially large documents.
_SUMMARY_COLUMNS = [c for c in messages.c if c.name not in ("raw", "bundle")]
_OUTBOX_COLUMNS = [
    outbox.c.state,
    outbox.c.attempts,
    outbox.c.next_attempt_at,
    outbox.c.lease_owner,
    outbox.c.lease_expires_at,
    outbox.c.last_error,
    outbox.c.delivered_at,
    outbox.c.replays,
    outbox.c.updated_at.label("outbox_updated_at"),
]
_WITH_OUTBOX = messages.join(outbox, outbox.c.record_id == messages.c.id)
_INSERT_MESSAGE = insert(messages)
_INSERT_OUTBOX = insert(outbox)
_INSERT_INDEX = insert(message_index)

#: The nullification's own message, beside the message it withdrew.
_NULLIFYING = messages.alias("nullifying")
#: A message with, when its sender withdrew it, the nullification that did (outer joins: most have none).
_WITH_NULLIFIED = (
    _WITH_OUTBOX.outerjoin(nullified_messages, nullified_messages.c.record_id == messages.c.id)
    .outerjoin(nullifications, nullifications.c.record_id == nullified_messages.c.nullification_id)
    .outerjoin(_NULLIFYING, _NULLIFYING.c.id == nullified_messages.c.nullification_id)
)
#: The columns of ``nullifications`` as a read labels them (``n_*``: ``document_id`` is also a message column).
_NULLIFICATION_COLUMNS = [c.label(f"n_{c.name}") for c in nullifications.c]
#: What a read of a message shows of its withdrawal (:func:`adaptor.store.queries._row_to_message`).
_NULLIFIED_COLUMNS = [
    nullified_messages.c.nullified_at,
    nullified_messages.c.withdrawal_version,
    *_NULLIFICATION_COLUMNS,
    _NULLIFYING.c.message_id.label("n_message_id"),
    _NULLIFYING.c.received_at.label("n_received_at"),
]

_INTERRUPTED_ERROR = (
    "never finished within its lease: the process stopped or the attempt outlasted its lease (possible redelivery)"
)


def _due_by_state(now: datetime | BindParameter[datetime]) -> tuple[ColumnElement[bool], ...]:
    """Messages a worker may claim at ``now``, one condition per state: pending or retrying and due, or delivering
    under an expired lease."""
    return (
        and_(outbox.c.state == Status.PENDING.value, outbox.c.next_attempt_at <= now),
        and_(outbox.c.state == Status.RETRYING.value, outbox.c.next_attempt_at <= now),
        and_(outbox.c.state == Status.DELIVERING.value, outbox.c.lease_expires_at <= now),
    )


def _due(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """Messages a worker may claim at ``now`` (:func:`_due_by_state`, any state)."""
    return or_(*_due_by_state(now))


def _not_being_delivered(now: datetime | BindParameter[datetime]) -> ColumnElement[bool]:
    """Anything but a live claim: a message whose lease has not expired belongs to its owner."""
    return or_(outbox.c.state != Status.DELIVERING.value, outbox.c.lease_expires_at <= now)


# -- the hot statements, built once ------------------------------------------------------------------------------
#
# Building a statement per call (coercing ``.values(**dict)``, a ``.where(...)`` tree with the time as a literal,
# then its cache key) cost more CPU than SQLite executing it. These are built once, with named parameters that
# each call binds (``conn.execute(statement, {"b_now": now, ...})``): SQLAlchemy memoises their cache keys and
# compiles each once. The parameter names are not column names, which UPDATE reserves for its SET clause.

_B_NOW: BindParameter[datetime] = bindparam("b_now", type_=DateTime(timezone=True))
_B_LEASE_EXPIRES_AT: BindParameter[datetime] = bindparam("b_lease_expires_at", type_=DateTime(timezone=True))
_B_NEXT_ATTEMPT_AT: BindParameter[datetime] = bindparam("b_next_attempt_at", type_=DateTime(timezone=True))
_B_RECORD_ID: BindParameter[str] = bindparam("b_record_id", type_=String(36))
_B_OWNER: BindParameter[str] = bindparam("b_owner", type_=Text())

_DUE = _due(_B_NOW)

#: SQLite's candidates for a claim: the :data:`CLAIM_CANDIDATES` due longest. The same rows as
#: ``SELECT ... WHERE _due(now) ORDER BY next_attempt_at LIMIT n``, but written as one ordered index range per
#: state (``ix_outbox_due`` is (state, next_attempt_at)), each stopping after n rows: the OR form made SQLite
#: read and sort every due row on every claim (about 1 ms of CPU with a backlog of 6000 messages).
_DUE_BY_STATE = union_all(
    *(
        select(outbox.c.record_id, outbox.c.state, outbox.c.synchronous, outbox.c.next_attempt_at)
        .where(condition)
        .order_by(outbox.c.next_attempt_at)
        .limit(CLAIM_CANDIDATES)
        .subquery()
        .select()
        for condition in _due_by_state(_B_NOW)
    )
).subquery("due")
_SELECT_CLAIM_CANDIDATES = (
    select(_DUE_BY_STATE.c.record_id, _DUE_BY_STATE.c.state, _DUE_BY_STATE.c.synchronous)
    .order_by(_DUE_BY_STATE.c.next_attempt_at)
    .limit(CLAIM_CANDIDATES)
)

#: PostgreSQL: lock the row due longest that no other transaction has locked (see ``_claim_due_skip_locked``).
_LOCK_NEXT_DUE = (
    select(outbox.c.record_id, outbox.c.state, outbox.c.synchronous)
    .where(_DUE)
    .order_by(outbox.c.next_attempt_at)
    .limit(1)
    .with_for_update(skip_locked=True)
)


def _claim_values(*, synchronous: bool) -> dict[str, Any]:
    return {
        "state": Status.DELIVERING.value,
        "attempts": outbox.c.attempts + 1,
        "lease_owner": _B_OWNER,
        "lease_expires_at": _B_LEASE_EXPIRES_AT,
        "synchronous": 1 if synchronous else 0,
        "updated_at": _B_NOW,
    }


def _claim_params(record_id: str, owner: str, now: datetime, lease_seconds: float) -> dict[str, Any]:
    return {
        "b_record_id": record_id,
        "b_owner": owner,
        "b_lease_expires_at": now + timedelta(seconds=lease_seconds),
        "b_now": now,
    }


#: A worker claims a due message (never one a synchronous request owns). Parameters: b_record_id, b_owner,
#: b_lease_expires_at, b_now.
_CLAIM_DUE = (
    update(outbox)
    .where(outbox.c.record_id == _B_RECORD_ID, outbox.c.synchronous == 0, _DUE)
    .values(**_claim_values(synchronous=False))
)
#: States a synchronous sender's resend never claims: nothing is left to deliver to that sender.
_NOT_FOR_SENDER = [
    Status.DELIVERED.value,
    Status.REJECTED.value,
    Status.NULLIFIED.value,
    Status.NULLIFICATION.value,
    Status.UNMATCHED.value,
]
#: The message its sender withdrew: its withdrawal is the workers' to deliver, never a resending sender's.
_IS_NULLIFIED = exists().where(nullified_messages.c.record_id == outbox.c.record_id)
#: A synchronous request claims a resent message that is not delivered, rejected, withdrawn, nor being delivered.
#: Same parameters.
_CLAIM_FOR_SENDER = (
    update(outbox)
    .where(
        outbox.c.record_id == _B_RECORD_ID,
        outbox.c.state.not_in(_NOT_FOR_SENDER),
        ~_IS_NULLIFIED,
        _not_being_delivered(_B_NOW),
    )
    .values(**_claim_values(synchronous=True))
)
_STATE_OF = select(outbox.c.state).where(outbox.c.record_id == _B_RECORD_ID)
#: A resent message's state, and whether its sender withdrew it. Parameter: b_record_id.
_SENDER_STATE = select(outbox.c.state, _IS_NULLIFIED.label("nullified")).where(outbox.c.record_id == _B_RECORD_ID)

#: What delivering a claimed message needs. Parameter: b_record_id.
_LOAD_CLAIM = (
    select(
        messages.c.message_id,
        messages.c.tracking_id,
        messages.c.interaction,
        messages.c.ods_codes,
        messages.c.dos_ids,
        messages.c.raw,
        messages.c.bundle,
        messages.c.bundle_version,
        messages.c.converted_at,
        outbox.c.attempts,
        outbox.c.synchronous,
        nullified_messages.c.withdrawal_version,
        _NULLIFYING.c.interaction.label("nullification_interaction"),
    )
    .select_from(
        _WITH_OUTBOX.outerjoin(nullified_messages, nullified_messages.c.record_id == messages.c.id).outerjoin(
            _NULLIFYING, _NULLIFYING.c.id == nullified_messages.c.nullification_id
        )
    )
    .where(messages.c.id == _B_RECORD_ID)
)

#: Close the attempts a previous owner never finished. Parameters: b_record_id, b_now.
_CLOSE_INTERRUPTED = (
    update(delivery_attempts)
    .where(delivery_attempts.c.message_record_id == _B_RECORD_ID, delivery_attempts.c.finished_at.is_(None))
    .values(finished_at=_B_NOW, outcome=AttemptOutcome.INTERRUPTED.value, error=_INTERRUPTED_ERROR)
)

#: A synchronous delivery whose lease expired (its process died while the sender waited) waits for the resend.
#: Parameters: b_record_id, b_now.
_HOLD_ABANDONED_SYNC = (
    update(outbox)
    .where(
        outbox.c.record_id == _B_RECORD_ID,
        outbox.c.state == Status.DELIVERING.value,
        outbox.c.synchronous == 1,
        outbox.c.lease_expires_at <= _B_NOW,
    )
    .values(
        state=Status.HELD.value,
        lease_owner=None,
        lease_expires_at=None,
        last_error="synchronous delivery interrupted (the process stopped); waiting for the resend",
        updated_at=_B_NOW,
    )
)

#: The outbox row of a claim still held by its owner. Parameters: b_record_id, b_owner.
_STILL_CLAIMED = (
    outbox.c.record_id == _B_RECORD_ID,
    outbox.c.state == Status.DELIVERING.value,
    outbox.c.lease_owner == _B_OWNER,
)
#: Parameters: those of _STILL_CLAIMED, b_lease_expires_at, b_now.
_RENEW_LEASE = update(outbox).where(*_STILL_CLAIMED).values(lease_expires_at=_B_LEASE_EXPIRES_AT, updated_at=_B_NOW)
#: A message stored before schema version 2 converted by its first attempt: the Bundle is kept as version 1 and
#: every later attempt sends it. Parameters: b_record_id, b_bundle, b_converted_at, b_now.
_KEEP_BUNDLE = (
    update(messages)
    .where(messages.c.id == _B_RECORD_ID, messages.c.bundle.is_(None))
    .values(
        bundle=bindparam("b_bundle", type_=Text()),
        bundle_version=1,
        converted_at=bindparam("b_converted_at", type_=DateTime(timezone=True)),
        updated_at=_B_NOW,
    )
)
#: Executed with a value for every column but ``id``.
_INSERT_ATTEMPT = insert(delivery_attempts)
#: A reconversion, before it replaces a message's Bundle: keep the current one, as it is, as superseded at b_now
#: (nothing for a message without a Bundle). Parameters: b_record_id, b_now.
_KEEP_SUPERSEDED = insert(bundle_versions).from_select(
    ["message_record_id", "version", "bundle", "converted_at", "superseded_at"],
    select(messages.c.id, messages.c.bundle_version, messages.c.bundle, messages.c.converted_at, _B_NOW).where(
        messages.c.id == _B_RECORD_ID, messages.c.bundle.is_not(None)
    ),
)


def _release_statement(*, delivered: bool, rescheduled: bool) -> Any:
    values: dict[str, Any] = {
        "state": bindparam("b_state", type_=String(16)),
        "lease_owner": None,
        "lease_expires_at": None,
        "synchronous": 0,
        "last_error": bindparam("b_error", type_=Text()),
        "updated_at": _B_NOW,
    }
    if delivered:
        values["delivered_at"] = _B_NOW
    if rescheduled:
        values["next_attempt_at"] = _B_NEXT_ATTEMPT_AT
    return update(outbox).where(*_STILL_CLAIMED).values(**values)


#: Release a claim into a state, by (delivered, rescheduled): ``delivered_at`` and ``next_attempt_at`` are set
#: only then. Parameters: those of _STILL_CLAIMED, b_state, b_error, b_now, and b_next_attempt_at when rescheduled.
_RELEASE = {
    (delivered, rescheduled): _release_statement(delivered=delivered, rescheduled=rescheduled)
    for delivered in (False, True)
    for rescheduled in (False, True)
}
#: Parameters: b_attempt_id, b_outcome, b_error, b_now.
_FINISH_ATTEMPT = (
    update(delivery_attempts)
    # An attempt a takeover already closed as interrupted (it outlasted its lease) stays interrupted: it may have
    # reached the target as well as the new owner's, and possible_redeliveries must count it.
    .where(
        delivery_attempts.c.id == bindparam("b_attempt_id", type_=Integer()),
        delivery_attempts.c.finished_at.is_(None),
    )
    .values(
        finished_at=_B_NOW,
        outcome=bindparam("b_outcome", type_=String(32)),
        error=bindparam("b_error", type_=Text()),
    )
)

#: A stored message by identity (an identical resend). Parameters: b_message_id, b_tracking_id, b_digest.
_FIND_IDENTITY = select(messages.c.id).where(
    messages.c.message_id == bindparam("b_message_id", type_=Text()),
    messages.c.tracking_id == bindparam("b_tracking_id", type_=Text()),
    messages.c.digest == bindparam("b_digest", type_=String(64)),
)


# -- nullification: the accept path's statements --------------------------------------------------------------

_B_DOCUMENT_ID: BindParameter[str] = bindparam("b_document_id", type_=Text())
_B_SET_ID: BindParameter[str] = bindparam("b_set_id", type_=Text())
_B_VERSION: BindParameter[int] = bindparam("b_version", type_=Integer())

#: PostgreSQL: a lock on one document's identifiers, held until the transaction ends, so that a message and the
#: nullification that withdraws it, arriving at once on two replicas, are stored one after the other and the
#: second finds the first. (SQLite: the writer's lock, taken by the first INSERT, does the same.) Parameter:
#: b_lock_key, a signed 64-bit key (:func:`document_lock_key`).
_LOCK_DOCUMENT = select(func.pg_advisory_xact_lock(bindparam("b_lock_key", type_=BigInteger())))

_STORED_DOCUMENT = messages.alias("stored_document")
#: The stored nullifications that withdraw an arriving document, the one that withdrew it first (its
#: ``effectiveTime``) first: as a nullification finds what it withdraws when it arrives
#: (:func:`adaptor.store.nullifying.matching_ids`), by the document's id, or by its setId and version when no stored
#: message has the id the nullification names. One table, by its indexes: it runs for every message accepted.
#: Parameters: b_document_id, b_set_id, b_version (each may be None: it then matches nothing).
_FIND_NULLIFICATIONS = (
    select(nullifications.c.record_id)
    .where(
        or_(
            nullifications.c.withdraws_id == _B_DOCUMENT_ID,
            and_(
                nullifications.c.withdraws_set_id == _B_SET_ID,
                nullifications.c.withdraws_version == _B_VERSION,
                or_(
                    nullifications.c.withdraws_id.is_(None),
                    ~exists().where(_STORED_DOCUMENT.c.document_id == nullifications.c.withdraws_id),
                ),
            ),
        )
    )
    .order_by(nullifications.c.effective_at, nullifications.c.record_id)
)
_INSERT_NULLIFICATION = insert(nullifications)
_INSERT_NULLIFIED = insert(nullified_messages)
#: A nullification that was unmatched has found its message. Parameters: b_record_id, b_now.
_MARK_MATCHED = (
    update(outbox)
    .where(outbox.c.record_id == _B_RECORD_ID, outbox.c.state == Status.UNMATCHED.value)
    .values(state=Status.NULLIFICATION.value, updated_at=_B_NOW)
)


def document_lock_key(identifier: str) -> int:
    """The PostgreSQL advisory lock key of a document identifier: the first 8 bytes of its SHA-256, signed."""
    return int.from_bytes(hashlib.sha256(identifier.encode("utf-8")).digest()[:8], "big", signed=True)


def _queue_values(now: datetime) -> dict[str, Any]:
    """A fresh start in the outbox: due now, a full budget of attempts."""
    return {
        "state": Status.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_owner": None,
        "lease_expires_at": None,
        "synchronous": 0,
        "updated_at": now,
    }


#: A message's new Bundle: its index row takes the Bundle's facts (:data:`adaptor.store.index.BUNDLE_COLUMNS`, each
#: bound as ``b_<column>``). Parameter: b_record_id.
_SET_INDEX_FACTS = (
    update(message_index)
    .where(message_index.c.record_id == bindparam("b_record_id", type_=String(36)))
    .values(**{column: bindparam(f"b_{column}", type_=message_index.c[column].type) for column in BUNDLE_COLUMNS})
)
