"""The message store: every accepted request, durably, before the sender is told ``OK``; and its outbox.

SQLAlchemy Core only (no ORM), portable column types and portable SQL, so the default SQLite file under the data
directory can be swapped for PostgreSQL (``PEM111_DATABASE_URL=postgresql://...``, driven by psycopg 3) by
changing that setting and nothing else. Several replicas may share one PostgreSQL store and its outbox; SQLite
suits one host (its file may be shared by the processes there: ``nhs111 serve`` and ``nhs111 worker``).
The schema is versioned and created or upgraded by :mod:`adaptor.migrations` (``nhs111 db upgrade``).

Four tables:

``messages``
    One row per accepted message: the envelope facts, the request bytes exactly as received (``raw``) and the
    Bundle last converted from them (``bundle``). A message is identified by (MessageID, trackingid,
    DistributionEnvelope digest): an identical resend finds the stored record instead of creating a second one,
    while a reused MessageID with different content is a new message (wire-contract.md section 5.3).
``outbox``
    One small row per message: its delivery state (:class:`Status`), attempt count, when it is next due, and
    the lease of whoever is delivering it. Kept apart from ``messages`` so that claiming and recording touch a
    few bytes, not the request document (SQLite rewrites a whole row on every update).
``delivery_attempts``
    The history: one row per attempt, written *before* the Bundle is handed to the target and finished after.
    An attempt that is never finished (the process died between sending and recording) is found when the
    message is claimed again and closed as ``interrupted``: a possible redelivery (see
    :meth:`MessageStore.possible_redeliveries`).

``rejections``
    One row per request answered with a fault: when, the rule, ErrorCode, ErrorText, the error id, and the
    request's MessageID, trackingid and sender ODS code when they could be read. Never the request body nor any
    patient data: it exists so that operators can count refusals and see why senders were refused.

Nothing is ever deleted. Claims are conditional ``UPDATE``\\s checked by row count, so two workers (threads,
processes, or replicas sharing a database) can never both own a message; a lease with an owner and an expiry
lets another worker take over the message of a worker that died. On PostgreSQL the outbox worker's claim first
locks the row it takes (``SELECT ... FOR UPDATE SKIP LOCKED``), so concurrent workers pass each other instead of
racing for the same row (see :meth:`MessageStore.claim_due`).

Every database failure surfaces as :class:`StoreError`; on the request path it is answered with the retryable
2100 fault.
"""

from __future__ import annotations

import enum
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    ColumnElement,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    and_,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import BindParameter

from adaptor.config import Settings
from adaptor.itk.message import ItkMessage
from adaptor.store import migrations

log = logging.getLogger("adaptor.store")  # pinned: the JSON log format names it

#: How long a writer waits for another thread's SQLite transaction before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: How many due messages one claim looks at (another worker may take some of them first), and how many times it
#: looks again when other workers took them all.
CLAIM_CANDIDATES = 8
CLAIM_ROUNDS = 3

#: PostgreSQL connections each process keeps beyond one per request thread and one per delivery thread: the
#: pool is sized from the settings (see :meth:`MessageStore.from_settings`) and never grows past that, so a
#: replica's share of the server's ``max_connections`` is known in advance.
POOL_MARGIN = 4

#: How long opening a PostgreSQL connection may take before the call fails (and is answered 2100), in seconds.
CONNECT_TIMEOUT_SECONDS = 10

#: URL schemes taken to mean PostgreSQL through psycopg 3 (SQLAlchemy's own default driver would be psycopg2).
_POSTGRESQL_SCHEMES = ("postgresql", "postgres")


class Status(enum.StrEnum):
    """The delivery state of a stored message (``outbox.state``)."""

    #: Stored and waiting for a worker: newly accepted (async mode), re-queued by a replay or by a resend.
    PENDING = "pending"
    #: Claimed by a worker or a synchronous request, which holds a lease (``lease_owner``, ``lease_expires_at``).
    DELIVERING = "delivering"
    #: The last attempt failed transiently; a worker tries again at ``next_attempt_at`` (exponential backoff).
    RETRYING = "retrying"
    #: Sync mode only: delivery failed (or was interrupted) while the sender waited, so the sender was told to
    #: retry (2100). Workers leave it alone; the sender's resend (or ``nhs111 replay``) delivers it.
    HELD = "held"
    #: The target accepted the Bundle. Final (only ``nhs111 replay MESSAGE_ID`` delivers it again).
    DELIVERED = "delivered"
    #: Given up: conversion failed, the target refused the Bundle for good, or every attempt failed.
    #: ``last_error`` says why. Final until ``nhs111 replay``.
    DEAD_LETTER = "dead_letter"


class AttemptOutcome(enum.StrEnum):
    """How one delivery attempt ended (``delivery_attempts.outcome``; ``NULL`` while it is in progress)."""

    DELIVERED = "delivered"
    FAILED = "failed"  # a transient failure: retried
    REJECTED = "rejected"  # the target refused the Bundle for good
    CONVERSION_FAILED = "conversion_failed"
    #: Started and never finished: the process stopped between handing the Bundle over and recording the result.
    INTERRUPTED = "interrupted"


class StoreError(RuntimeError):
    """The store could not read or write; the message was not (or may not have been) recorded."""


class SchemaVersionError(StoreError):
    """The database's schema is not one this adaptor can use: it needs ``nhs111 db upgrade`` (older), another
    adaptor version (newer and incompatible), or another database (not ours). Waiting does not fix it."""


metadata = MetaData()

messages = Table(
    "messages",
    metadata,
    Column("id", String(36), primary_key=True),  # our own uuid4, also the delivery record id
    # Free-text identifiers from the sender: Text, because nothing on the wire bounds their length.
    Column("message_id", Text, nullable=False),
    Column("tracking_id", Text, nullable=False),
    Column("digest", String(64), nullable=False),  # sha256 hex of the canonical DistributionEnvelope
    Column("service", Text, nullable=False),
    Column("interaction", Text, nullable=False),
    Column("ods_codes", Text, nullable=False),  # JSON array of strings
    Column("dos_ids", Text, nullable=False),  # JSON array of strings
    Column("sender", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),  # UTC
    Column("raw", LargeBinary, nullable=False),  # the request exactly as received
    Column("bundle", Text, nullable=True),  # the FHIR Bundle JSON last converted (cleared by a replay)
    Column("updated_at", DateTime(timezone=True), nullable=False),  # UTC
    UniqueConstraint("message_id", "tracking_id", "digest", name="uq_messages_identity"),
)
Index("ix_messages_message_id", messages.c.message_id)
Index("ix_messages_tracking_id", messages.c.tracking_id)
Index("ix_messages_received_at", messages.c.received_at)

outbox = Table(
    "outbox",
    metadata,
    Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),
    Column("state", String(16), nullable=False),  # a Status value
    Column("attempts", Integer, nullable=False),  # attempts since acceptance or the last replay
    # When a worker may take the message: acceptance time when pending, after the backoff when retrying.
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_owner", Text, nullable=True),  # who is delivering it (state delivering)
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),  # after this another worker may take over
    # 1 while a synchronous request (sync mode) owns the message: workers never deliver it behind the sender's
    # back, even after the lease expired; they mark it held instead.
    Column("synchronous", Integer, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    Column("replays", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_record_id", String(36), ForeignKey("messages.id"), nullable=False),
    Column("owner", Text, nullable=False),  # the worker (or synchronous request) that made the attempt
    Column("target", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),  # NULL: in progress, or never finished
    Column("outcome", String(32), nullable=True),  # an AttemptOutcome value; NULL until finished
    Column("error", Text, nullable=True),
)
Index("ix_delivery_attempts_record", delivery_attempts.c.message_record_id)
Index("ix_delivery_attempts_outcome", delivery_attempts.c.outcome)

rejections = Table(
    "rejections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rejected_at", DateTime(timezone=True), nullable=False),  # UTC
    Column("rule", String(16), nullable=False),  # the wire-contract rule (C4, E1...), "" when none
    Column("error_code", Integer, nullable=False),  # the ITK ErrorCode sent
    Column("error_text", Text, nullable=False),  # the ErrorText sent (never the diagnostic text)
    Column("error_id", String(64), nullable=False),  # the ErrorID sent: the key into the logs
    # What could be read of the request before it was refused; NULL when it could not.
    Column("message_id", Text, nullable=True),
    Column("tracking_id", Text, nullable=True),
    Column("sender_ods", Text, nullable=True),
)
Index("ix_rejections_rejected_at", rejections.c.rejected_at)

_SENDER_PREFIX = "urn:nhs-uk:identity:ods:"

#: Identifiers read from a refused request are cut to this length before they are kept (they are free text).
MAX_REJECTION_FIELD = 200

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

_INTERRUPTED_ERROR = (
    "never finished within its lease: the process stopped or the attempt outlasted its lease (possible redelivery)"
)


@dataclass(frozen=True)
class StoredMessage:
    """One message with its delivery state. ``raw`` and ``bundle`` are ``None`` in listings (not loaded)."""

    id: str
    message_id: str
    tracking_id: str
    digest: str
    service: str
    interaction: str
    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]
    sender: str
    received_at: datetime
    status: Status
    status_reason: str | None  # the outbox's last_error
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_expires_at: datetime | None
    delivered_at: datetime | None
    replays: int
    updated_at: datetime  # the later of the message's and its outbox row's updates
    raw: bytes | None = None
    bundle: str | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    owner: str
    target: str
    started_at: datetime
    finished_at: datetime | None
    outcome: AttemptOutcome | None  # None: in progress (or the process died and nobody has claimed it since)
    error: str | None


@dataclass(frozen=True)
class Rejection:
    """A refused request: the fault it was answered with and what identified it. No body, no patient data."""

    rule: str
    error_code: int
    error_text: str
    error_id: str
    message_id: str | None = None
    tracking_id: str | None = None
    sender_ods: str | None = None
    rejected_at: datetime | None = None  # set by the store


@dataclass(frozen=True)
class MessageQuery:
    """Which messages a listing or count selects; every field narrows it, and the empty query selects all.

    ``search`` matches a MessageID, a trackingid or a record id exactly (as given, or upper or lower case, so
    that the indexes are used), or the ODS code of a recipient or of the sender (any case).
    """

    statuses: Sequence[Status] = ()
    since: datetime | None = None  # received at or after
    tracking_id: str | None = None
    search: str | None = None


@dataclass(frozen=True)
class Claim:
    """A message claimed by ``owner`` (until its lease expires), with what delivering it needs."""

    record_id: str
    message_id: str
    tracking_id: str
    interaction: str
    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]
    raw: bytes
    bundle: str | None  # the Bundle converted by an earlier attempt (sent again as is); None: convert ``raw``
    owner: str
    attempt: int  # the number of this attempt since acceptance or the last replay (1 = first)
    synchronous: bool  # claimed by a synchronous request: failures hold the message for the sender's resend
    #: Earlier attempts found unfinished by this claim, closed as interrupted: each may have reached the target,
    #: so delivering now may deliver the message a second time (same MessageID, so consumers can drop it).
    interrupted: int

    @classmethod
    def for_new_message(cls, record_id: str, message: ItkMessage, raw: bytes, owner: str) -> Claim:
        """The claim :meth:`MessageStore.accept` stored with ``claim_for=owner``, built from what the caller
        already holds instead of being read back."""
        return cls(
            record_id=record_id,
            message_id=message.message_id,
            tracking_id=message.tracking_id,
            interaction=message.interaction,
            ods_codes=message.ods_codes,
            dos_ids=message.dos_ids,
            raw=raw,
            bundle=None,
            owner=owner,
            attempt=1,
            synchronous=True,
            interrupted=0,
        )


@dataclass(frozen=True)
class Redelivery:
    """A delivered message that had interrupted attempts: it may have reached the target more than once."""

    record_id: str
    message_id: str
    interrupted_attempts: int


@dataclass(frozen=True)
class ReplayResult:
    record_id: str
    message_id: str
    previous: Status
    requeued: bool  # False: it was being delivered right now (a live lease), so it was left alone


def utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # SQLite has no time zone type: values come back naive, but they were written as UTC. PostgreSQL's come back
    # in the session's time zone (set to UTC, but a URL may override it): the same instant, shown as UTC.
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _optional_utc(value: datetime | None) -> datetime | None:
    return None if value is None else _as_utc(value)


def _row_to_message(row: Any) -> StoredMessage:
    mapping = row._mapping
    updated_at = max(_as_utc(mapping["updated_at"]), _as_utc(mapping["outbox_updated_at"]))
    return StoredMessage(
        id=mapping["id"],
        message_id=mapping["message_id"],
        tracking_id=mapping["tracking_id"],
        digest=mapping["digest"],
        service=mapping["service"],
        interaction=mapping["interaction"],
        ods_codes=tuple(json.loads(mapping["ods_codes"])),
        dos_ids=tuple(json.loads(mapping["dos_ids"])),
        sender=mapping["sender"],
        received_at=_as_utc(mapping["received_at"]),
        status=Status(mapping["state"]),
        status_reason=mapping["last_error"],
        attempts=mapping["attempts"],
        next_attempt_at=_as_utc(mapping["next_attempt_at"]),
        lease_owner=mapping["lease_owner"],
        lease_expires_at=_optional_utc(mapping["lease_expires_at"]),
        delivered_at=_optional_utc(mapping["delivered_at"]),
        replays=mapping["replays"],
        updated_at=updated_at,
        raw=mapping.get("raw"),
        bundle=mapping.get("bundle"),
    )


def _without_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL characters (SQLite can): an error text quoting a target's reply might."""
    return value.replace("\x00", "")


def _optional_without_nul(value: str | None) -> str | None:
    return None if value is None else _without_nul(value)


def _clip_field(value: str | None) -> str | None:
    if value is None:
        return None
    value = _without_nul(value).strip()
    return value[:MAX_REJECTION_FIELD] or None


def _spellings(text: str) -> list[str]:
    return list(dict.fromkeys((text, text.upper(), text.lower())))


def _message_conditions(query: MessageQuery) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if query.statuses:
        conditions.append(outbox.c.state.in_([s.value for s in query.statuses]))
    if query.since is not None:
        conditions.append(messages.c.received_at >= query.since)
    if query.tracking_id:
        conditions.append(messages.c.tracking_id.in_(_spellings(query.tracking_id.strip())))
    search = (query.search or "").strip()
    if search:
        spellings = _spellings(search)
        conditions.append(
            or_(
                messages.c.message_id.in_(spellings),
                messages.c.tracking_id.in_(spellings),
                messages.c.id.in_(spellings),
                # ods_codes is a JSON array written by json.dumps: '"CODE"' matches one whole element.
                func.lower(messages.c.ods_codes).contains(json.dumps(search.lower()), autoescape=True),
                # The sender's ODS code: urn:nhs-uk:identity:ods:CODE, possibly followed by :suffix.
                func.lower(messages.c.sender) == f"{_SENDER_PREFIX}{search.lower()}",
                func.lower(messages.c.sender).startswith(f"{_SENDER_PREFIX}{search.lower()}:", autoescape=True),
            )
        )
    return conditions


def _configure_sqlite(engine: Engine) -> None:
    """A busy timeout (writers queue instead of failing), WAL (readers never block the writer) and
    ``synchronous=FULL`` (a commit is on disk before it returns: the sender is told OK only after that).

    The busy timeout comes first, so that everything after it waits for other connections' locks."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode unless it already is (the mode is kept in the file, so this changes
    something only on the first connection to a new or pre-WAL file).

    Changing the journal mode needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy handler, while any other connection holds a lock: which is exactly when processes or replicas start
    together on a new file. So the change is retried, with growing pauses, for up to the busy timeout. (An
    in-memory database answers ``memory`` to the change, and stays so.)
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def sqlalchemy_url(database_url: str) -> URL:
    """``PEM111_DATABASE_URL`` as SQLAlchemy should see it: ``postgresql://`` and ``postgres://`` (the form
    hosting platforms hand out) mean psycopg 3, ``postgresql+psycopg://``; any other URL is taken as it is."""
    scheme, separator, rest = database_url.partition("://")
    if separator and scheme.lower() in _POSTGRESQL_SCHEMES:
        database_url = f"postgresql+psycopg://{rest}"
    return make_url(database_url)


def _postgresql_connect_args(url: URL) -> dict[str, Any]:
    """Defaults a URL's own query parameters override: a bounded connect time (an unreachable server fails the
    call instead of hanging a request thread) and UTC as the session's time zone (naive times, which SQLite
    hands back and callers may pass, mean UTC everywhere)."""
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "options" not in url.query:
        connect_args["options"] = "-c TimeZone=UTC"
    return connect_args


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
#: A synchronous request claims a resent message that is not delivered nor being delivered. Same parameters.
_CLAIM_FOR_SENDER = (
    update(outbox)
    .where(
        outbox.c.record_id == _B_RECORD_ID,
        outbox.c.state != Status.DELIVERED.value,
        _not_being_delivered(_B_NOW),
    )
    .values(**_claim_values(synchronous=True))
)
_STATE_OF = select(outbox.c.state).where(outbox.c.record_id == _B_RECORD_ID)

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
        outbox.c.attempts,
        outbox.c.synchronous,
    )
    .select_from(_WITH_OUTBOX)
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
#: Parameters: b_record_id, b_bundle, b_now.
_KEEP_BUNDLE = (
    update(messages)
    .where(messages.c.id == _B_RECORD_ID)
    .values(bundle=bindparam("b_bundle", type_=Text()), updated_at=_B_NOW)
)
#: Executed with a value for every column but ``id``.
_INSERT_ATTEMPT = insert(delivery_attempts)


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


class MessageStore:
    """The ``messages``, ``outbox``, ``delivery_attempts`` and ``rejections`` tables behind a small, thread-safe API.

    Safe to share between request and worker threads: each call checks a connection out of the engine's pool
    and commits before returning. :meth:`open` (also run by the first call) creates the schema in an empty
    database and checks its version otherwise; when the database is unreachable at start-up the store still
    constructs and every call retries (and raises :class:`StoreError` until it succeeds), so a database that
    comes up late does not need a restart.

    Times are the caller's clock (UTC): replicas sharing a database need synchronised clocks for leases.
    """

    def __init__(self, database_url: str, *, pool_size: int | None = None) -> None:
        """``database_url``: a SQLAlchemy URL (see :func:`sqlalchemy_url`). ``pool_size``: how many connections
        a server database's pool keeps, and at most opens (SQLAlchemy's default when ``None``); SQLite keeps
        SQLAlchemy's defaults."""
        url = sqlalchemy_url(database_url)
        backend = url.get_backend_name()
        self.is_sqlite = backend == "sqlite"
        self.is_postgresql = backend == "postgresql"
        engine_options: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            # The busy timeout, not the pool, serialises writers; pysqlite's thread check is moot with a pool.
            engine_options["connect_args"] = {
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "check_same_thread": False,
            }
        else:
            engine_options["pool_pre_ping"] = True  # a server restart leaves dead connections in the pool
            if pool_size is not None:
                engine_options.update(pool_size=pool_size, max_overflow=0)
        if self.is_postgresql:
            engine_options["connect_args"] = _postgresql_connect_args(url)
        self._url = url
        self.engine = create_engine(url, **engine_options)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # SQLite has one writer at a time. Threads of this process queue for it here, in order and waking at
        # once, rather than in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) between tries:
        # under concurrent requests those sleeps were most of the p99 latency. Other processes on the same file
        # (an ``nhs111 worker``) still meet the busy handler. A server database has row locks: no lock here.
        self._write_lock: AbstractContextManager[object] = threading.Lock() if self.is_sqlite else nullcontext()

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageStore:
        """The configured store, its pool sized for this process: a connection for each request thread and each
        delivery thread (each holds at most one at a time), and :data:`POOL_MARGIN` more."""
        pool_size = settings.server_threads + settings.delivery_workers + POOL_MARGIN
        return cls(settings.resolved_database_url, pool_size=pool_size)

    @property
    def url(self) -> str:
        """The database URL with any password masked (for logs)."""
        return self._url.render_as_string(hide_password=True)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Make sure the schema is one this code can use: create it (and the SQLite file's folder) when the
        database is empty, and refuse it otherwise unless it is at this adaptor's version (or a newer, compatible
        one). See :mod:`adaptor.migrations`. Raises :class:`StoreError`, and :class:`SchemaVersionError` when
        the schema is the problem."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                if self.is_sqlite and self._url.database and self._url.database != ":memory:":
                    Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
                state = migrations.create_if_empty(self.engine)
                self._check_version(state)
            except migrations.SchemaError as exc:
                raise SchemaVersionError(f"the message store {self.url} has an {exc}; use a new database") from exc
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(f"cannot open the message store {self.url}: {_describe(exc)}") from exc
            self._schema_ready = True

    def _check_version(self, state: migrations.SchemaState) -> None:
        """Refuse a schema this code cannot use, by name, rather than failing on every insert later."""
        head = migrations.head_version()
        upgrade = "run `nhs111 db upgrade` (back the database up first)"
        if state.unversioned:
            # From before versioning: the layout check says whether it is ours at all.
            self._check_layout(migrations.version_1_tables().sorted_tables, only_present=state.tables)
            raise SchemaVersionError(
                f"the message store {self.url} predates schema versioning (version 0); this adaptor needs "
                f"version {head}: {upgrade}"
            )
        if state.number < head:
            raise SchemaVersionError(
                f"the message store {self.url} is at schema version {state.number}; this adaptor needs version "
                f"{head}: {upgrade}"
            )
        if state.number > head:
            problems = self._layout_problems(metadata.sorted_tables)
            if problems:
                raise SchemaVersionError(
                    f"the message store {self.url} is at schema version {state.number}, newer than this adaptor's "
                    f"{head}, and this adaptor cannot use it ({'; '.join(problems)}): run a newer adaptor"
                )
            log.warning(
                "the message store %s is at schema version %d, newer than this adaptor's %d; its layout is "
                "compatible, continuing (upgrade this adaptor)",
                self.url,
                state.number,
                head,
            )
            return
        self._check_layout(metadata.sorted_tables)

    def _layout_problems(self, tables: Sequence[Table]) -> list[str]:
        with self.engine.connect() as conn:
            return migrations.layout_problems(conn, tables)

    def _check_layout(self, tables: Sequence[Table], only_present: Iterable[str] | None = None) -> None:
        if only_present is not None:
            present = set(only_present)
            tables = [table for table in tables if table.name in present]
        problems = self._layout_problems(tables)
        if problems:
            raise migrations.SchemaError(
                f"incompatible layout ({'; '.join(problems)}): it was created by another version of the adaptor"
            )

    def open_if_available(self) -> bool:
        """:meth:`open`, but an unreachable database is logged instead of raised: the service starts anyway,
        answers 2100 meanwhile, and every call retries. Returns whether the store is open.

        A schema this adaptor cannot use (:class:`SchemaVersionError`) is not an outage that waiting would end:
        it is logged as one line naming the remedy (``nhs111 db upgrade``), and the process exits with status 2,
        as for any other configuration error.
        """
        try:
            self.open()
        except SchemaVersionError as exc:
            log.error("%s", exc)
            raise SystemExit(2) from None
        except StoreError as exc:
            log.warning("message store unavailable at start-up, answering 2100 until it is: %s", exc)
            return False
        return True

    def upgrade_schema(self) -> migrations.UpgradeResult:
        """``nhs111 db upgrade``: create the schema or apply the pending migration steps (see
        :func:`adaptor.migrations.upgrade`). Raises :class:`SchemaVersionError` for a layout that is not ours,
        :class:`StoreError` when the database fails."""
        try:
            if self.is_sqlite and self._url.database and self._url.database != ":memory:":
                Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
            return migrations.upgrade(self.engine)
        except migrations.SchemaError as exc:
            raise SchemaVersionError(f"the message store {self.url} has an {exc}; nothing was changed") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot upgrade the message store {self.url}: {_describe(exc)}") from exc

    def schema_state(self) -> migrations.SchemaState:
        """``nhs111 db current``: the database's schema version and history, read without changing anything
        (a SQLite file that does not exist yet is not created)."""
        database = self._url.database
        if self.is_sqlite and database and database != ":memory:" and not Path(database).exists():
            return migrations.SchemaState(version=None, tables=frozenset())
        try:
            with self.engine.connect() as conn:
                return migrations.read_state(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the message store {self.url}: {_describe(exc)}") from exc

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self, *, writes: bool = True) -> Iterator[Connection]:
        """A committed-on-exit transaction; any database failure becomes :class:`StoreError`. One that only reads
        (``writes=False``) is not serialised with the writers: WAL readers never wait."""
        self.open()
        try:
            with self._write_lock if writes else nullcontext(), self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"message store failure: {_describe(exc)}") from exc

    def _reading(self) -> AbstractContextManager[Connection]:
        """A transaction that only reads (:meth:`_transaction`)."""
        return self._transaction(writes=False)

    # -- the request path ------------------------------------------------------------------------------------

    def accept(
        self, message: ItkMessage, raw: bytes, *, claim_for: str | None = None, lease_seconds: float = 0
    ) -> tuple[str, bool]:
        """Record ``message`` (and the request bytes ``raw``) in one transaction, committed on return.

        The message is queued (``pending``) for the outbox workers; with ``claim_for`` it is instead stored
        already claimed by that synchronous request for ``lease_seconds`` (sync mode), so no worker takes it.

        Returns ``(record_id, is_new)``. An identical resend (same MessageID, trackingid and digest) returns the
        existing record's id and ``False`` and writes nothing (see :meth:`claim_for_sender` and
        :meth:`requeue_held` for what a resend may do to it).
        """
        now = utc_now()
        record_id = str(uuid.uuid4())
        message_row = {
            "id": record_id,
            "message_id": message.message_id,
            "tracking_id": message.tracking_id,
            "digest": message.digest,
            "service": message.service,
            "interaction": message.interaction,
            "ods_codes": json.dumps(list(message.ods_codes)),
            "dos_ids": json.dumps(list(message.dos_ids)),
            "sender": message.sender,
            "received_at": now,
            "raw": raw,
            "bundle": None,
            "updated_at": now,
        }
        outbox_row: dict[str, Any] = {
            "record_id": record_id,
            "state": Status.PENDING.value,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_owner": None,
            "lease_expires_at": None,
            "synchronous": 0,
            "last_error": None,
            "delivered_at": None,
            "replays": 0,
            "updated_at": now,
        }
        if claim_for is not None:
            outbox_row.update(
                state=Status.DELIVERING.value,
                attempts=1,
                lease_owner=claim_for,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                synchronous=1,
            )
        try:
            # Insert first: new messages are the common case, and the unique constraint (not a prior SELECT)
            # decides a race between two copies of the same resend arriving at once.
            with self._transaction() as conn:
                # Statement and values apart: the compiled INSERT is cached, the values are only bound.
                conn.execute(_INSERT_MESSAGE, message_row)
                conn.execute(_INSERT_OUTBOX, outbox_row)
            return record_id, True
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        existing = self._find_identity(message.message_id, message.tracking_id, message.digest)
        if existing is None:  # the IntegrityError was not the identity constraint after all
            raise StoreError("message store rejected the new record")
        return existing, False

    def _find_identity(self, message_id: str, tracking_id: str, digest: str) -> str | None:
        params = {"b_message_id": message_id, "b_tracking_id": tracking_id, "b_digest": digest}
        with self._reading() as conn:
            return conn.execute(_FIND_IDENTITY, params).scalar_one_or_none()

    def claim_for_sender(self, record_id: str, owner: str, lease_seconds: float) -> Claim | Status:
        """Sync mode, a resend of a stored message: claim it for this request unless it is delivered or being
        delivered. Returns the :class:`Claim`, or the state that prevented it (``delivered`` or
        ``delivering``)."""
        now = utc_now()
        with self._transaction() as conn:
            result = conn.execute(_CLAIM_FOR_SENDER, _claim_params(record_id, owner, now, lease_seconds))
            if result.rowcount == 1:
                return self._load_claim(conn, record_id, owner, now)
            state = conn.execute(_STATE_OF, {"b_record_id": record_id}).scalar_one_or_none()
        if state is None:
            raise StoreError(f"no stored message with id {record_id}")
        return Status(state)

    def requeue_held(self, record_id: str) -> bool:
        """Async mode, a resend of a stored message: a message held for this resend (a failed or interrupted
        synchronous delivery) goes back to the workers. Returns whether it was re-queued."""
        now = utc_now()
        held = or_(
            outbox.c.state == Status.HELD.value,
            and_(
                outbox.c.state == Status.DELIVERING.value,
                outbox.c.synchronous == 1,
                outbox.c.lease_expires_at <= now,
            ),
        )
        with self._transaction() as conn:
            result = conn.execute(
                update(outbox).where(outbox.c.record_id == record_id, held).values(**self._queue_values(now))
            )
        return result.rowcount == 1

    # -- the outbox worker -----------------------------------------------------------------------------------

    def claim_due(self, owner: str, lease_seconds: float) -> Claim | None:
        """Claim the message that has been due longest, for ``owner``, for ``lease_seconds``; ``None`` when
        nothing is due.

        A synchronous delivery whose lease expired (its process died while the sender waited) is marked
        ``held`` on the way instead of being claimed: the sender never got OK and will resend.
        """
        if self.is_postgresql:
            return self._claim_due_skip_locked(owner, lease_seconds)
        return self._claim_due_by_row_count(owner, lease_seconds)

    def _claim_due_skip_locked(self, owner: str, lease_seconds: float) -> Claim | None:
        """PostgreSQL: lock the oldest due row that no other transaction has locked, and claim it, in one
        transaction.

        ``SELECT ... FOR UPDATE SKIP LOCKED`` passes over rows other workers are claiming at this moment instead
        of waiting for them, and re-checks the row it locks against the WHERE clause (a row claimed and committed
        meanwhile is no longer due), so workers never take the same message and never queue behind each other.
        The UPDATE keeps the conditions of the portable claim as a second guard.
        """
        for _ in range(CLAIM_CANDIDATES):  # each round claims a message or holds an abandoned synchronous one
            now = utc_now()
            with self._transaction() as conn:
                candidate = conn.execute(_LOCK_NEXT_DUE, {"b_now": now}).first()
                if candidate is None:
                    return None
                record_id = candidate.record_id
                if candidate.state == Status.DELIVERING.value and candidate.synchronous:
                    self._hold_abandoned_sync_in(conn, record_id, now)
                    continue
                claimed = conn.execute(_CLAIM_DUE, _claim_params(record_id, owner, now, lease_seconds))
                if claimed.rowcount == 1:
                    return self._load_claim(conn, record_id, owner, now)
        return None

    def _claim_due_by_row_count(self, owner: str, lease_seconds: float) -> Claim | None:
        """Any database (SQLite): candidates first, outside any transaction; then a conditional UPDATE per
        candidate, checked by row count, decides the race with other workers (SQLite evaluates the WHERE again
        under its write lock, which serialises writers)."""
        for _ in range(CLAIM_ROUNDS):
            now = utc_now()
            with self._reading() as conn:
                candidates = conn.execute(_SELECT_CLAIM_CANDIDATES, {"b_now": now}).all()
            if not candidates:
                return None
            for record_id, state, synchronous in candidates:
                if state == Status.DELIVERING.value and synchronous:
                    self._hold_abandoned_sync(record_id, now)
                    continue
                with self._transaction() as conn:
                    claimed = conn.execute(_CLAIM_DUE, _claim_params(record_id, owner, now, lease_seconds))
                    if claimed.rowcount == 1:
                        return self._load_claim(conn, record_id, owner, now)
            # Every candidate went to other workers (or was held): there may be more due behind them.
        return None

    def _hold_abandoned_sync(self, record_id: str, now: datetime) -> None:
        with self._transaction() as conn:
            self._hold_abandoned_sync_in(conn, record_id, now)

    def _hold_abandoned_sync_in(self, conn: Connection, record_id: str, now: datetime) -> None:
        held = conn.execute(_HOLD_ABANDONED_SYNC, {"b_record_id": record_id, "b_now": now})
        if held.rowcount == 1:
            self._close_interrupted(conn, record_id, now)
            log.warning("record=%s: synchronous delivery was interrupted; held for the sender's resend", record_id)

    def start_attempt(self, claim: Claim, target: str, lease_seconds: float, bundle_json: str | None) -> int | None:
        """Just before handing the Bundle to ``target``: renew the lease, keep a newly converted
        ``bundle_json`` (``None``: the claim's bundle is sent again) and log the attempt as started.

        Returns the attempt id, or ``None`` when the claim is no longer ours (the lease expired and another
        worker took the message): then nothing must be sent.
        """
        now = utc_now()
        with self._transaction() as conn:
            renewed = conn.execute(
                _RENEW_LEASE,
                {
                    "b_record_id": claim.record_id,
                    "b_owner": claim.owner,
                    "b_lease_expires_at": now + timedelta(seconds=lease_seconds),
                    "b_now": now,
                },
            )
            if renewed.rowcount != 1:
                return None
            if bundle_json is not None:
                conn.execute(_KEEP_BUNDLE, {"b_record_id": claim.record_id, "b_bundle": bundle_json, "b_now": now})
            attempt = conn.execute(
                _INSERT_ATTEMPT,
                {
                    "message_record_id": claim.record_id,
                    "owner": claim.owner,
                    "target": target,
                    "started_at": now,
                    "finished_at": None,
                    "outcome": None,
                    "error": None,
                },
            )
            attempt_id = attempt.inserted_primary_key
            assert attempt_id is not None
            return int(attempt_id[0])

    def finish(
        self,
        claim: Claim,
        *,
        state: Status,
        outcome: AttemptOutcome,
        target: str,
        attempt_id: int | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Record how the claimed attempt ended and release the claim into ``state``.

        ``attempt_id`` is the id :meth:`start_attempt` returned; ``None`` logs an attempt that ended before
        anything was sent (a conversion failure). ``next_attempt_at`` is when a ``retrying`` message is due.
        The attempt is always recorded; the state only while the claim is still ``claim.owner``'s. Returns
        whether it was (``False``: the lease had expired and another worker owns the message now).
        """
        now = utc_now()
        error = _optional_without_nul(error)
        # The outbox row first, then the attempt's: the order a claim taking over the message locks them in
        # (outbox, then its unfinished attempts), so the two can wait for each other but never deadlock.
        release: dict[str, Any] = {
            "b_record_id": claim.record_id,
            "b_owner": claim.owner,
            "b_state": state.value,
            "b_error": error,
            "b_now": now,
        }
        if next_attempt_at is not None:
            release["b_next_attempt_at"] = next_attempt_at
        with self._transaction() as conn:
            released = conn.execute(_RELEASE[state is Status.DELIVERED, next_attempt_at is not None], release)
            if attempt_id is None:
                conn.execute(
                    _INSERT_ATTEMPT,
                    {
                        "message_record_id": claim.record_id,
                        "owner": claim.owner,
                        "target": target,
                        "started_at": now,
                        "finished_at": now,
                        "outcome": outcome.value,
                        "error": error,
                    },
                )
            else:
                conn.execute(
                    _FINISH_ATTEMPT,
                    {"b_attempt_id": attempt_id, "b_outcome": outcome.value, "b_error": error, "b_now": now},
                )
            return released.rowcount == 1

    def retry_waiting_now(self) -> int:
        """Make every ``retrying`` message due now (the target is back); returns how many."""
        now = utc_now()
        with self._transaction() as conn:
            result = conn.execute(
                update(outbox)
                .where(outbox.c.state == Status.RETRYING.value, outbox.c.next_attempt_at > now)
                .values(next_attempt_at=now, updated_at=now)
            )
        return int(result.rowcount)

    @staticmethod
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

    def _load_claim(self, conn: Connection, record_id: str, owner: str, now: datetime) -> Claim:
        """Inside the claiming transaction: close the attempts the previous owner never finished, then read
        what delivering needs."""
        interrupted = self._close_interrupted(conn, record_id, now)
        row = conn.execute(_LOAD_CLAIM, {"b_record_id": record_id}).one()
        return Claim(
            record_id=record_id,
            message_id=row.message_id,
            tracking_id=row.tracking_id,
            interaction=row.interaction,
            ods_codes=tuple(json.loads(row.ods_codes)),
            dos_ids=tuple(json.loads(row.dos_ids)),
            raw=row.raw,
            bundle=row.bundle,
            owner=owner,
            attempt=row.attempts,
            synchronous=bool(row.synchronous),
            interrupted=interrupted,
        )

    @staticmethod
    def _close_interrupted(conn: Connection, record_id: str, now: datetime) -> int:
        result = conn.execute(_CLOSE_INTERRUPTED, {"b_record_id": record_id, "b_now": now})
        return int(result.rowcount)

    # -- operators -------------------------------------------------------------------------------------------

    def replay(self, record_ids: Iterable[str]) -> list[ReplayResult]:
        """Queue each record for delivery again, from the start: attempts reset, the stored Bundle dropped so it
        is converted again from ``raw`` (a mapping fix reaches old messages); the history is kept. A message
        being delivered right now (live lease) is left alone. Unknown ids are skipped."""
        results: list[ReplayResult] = []
        for record_id in record_ids:
            now = utc_now()
            with self._transaction() as conn:
                found = conn.execute(
                    select(messages.c.message_id, outbox.c.state)
                    .select_from(_WITH_OUTBOX)
                    .where(messages.c.id == record_id)
                ).first()
                if found is None:
                    continue
                requeued = conn.execute(
                    update(outbox)
                    .where(outbox.c.record_id == record_id, _not_being_delivered(now))
                    .values(**self._queue_values(now), last_error=None, replays=outbox.c.replays + 1)
                )
                if requeued.rowcount == 1:
                    conn.execute(update(messages).where(messages.c.id == record_id).values(bundle=None, updated_at=now))
                results.append(ReplayResult(record_id, found.message_id, Status(found.state), requeued.rowcount == 1))
        return results

    # -- reads -----------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> StoredMessage | None:
        """The full record (with ``raw`` and ``bundle``), or ``None``."""
        query = select(messages, *_OUTBOX_COLUMNS).select_from(_WITH_OUTBOX).where(messages.c.id == record_id)
        with self._reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else _row_to_message(row)

    def find_by_message_id(self, message_id: str) -> list[StoredMessage]:
        """Every record with this wsa:MessageID (MessageIDs are reused), oldest first, with content."""
        query = (
            select(messages, *_OUTBOX_COLUMNS)
            .select_from(_WITH_OUTBOX)
            .where(messages.c.message_id == message_id)
            .order_by(messages.c.received_at, messages.c.id)
        )
        with self._reading() as conn:
            return [_row_to_message(row) for row in conn.execute(query)]

    def list_messages(
        self,
        *,
        statuses: Sequence[Status] = (),
        limit: int = 100,
        offset: int = 0,
        where: MessageQuery | None = None,
    ) -> list[StoredMessage]:
        """Records newest first, without ``raw`` and ``bundle``; optionally only the given states, or only the
        records ``where`` selects (its statuses win over ``statuses``)."""
        where = where or MessageQuery(statuses=statuses)
        query = (
            select(*_SUMMARY_COLUMNS, *_OUTBOX_COLUMNS)
            .select_from(_WITH_OUTBOX)
            .where(*_message_conditions(where))
            .order_by(messages.c.received_at.desc(), messages.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as conn:
            return [_row_to_message(row) for row in conn.execute(query)]

    def count_messages(self, where: MessageQuery | None = None) -> int:
        """How many records ``where`` selects (all of them by default)."""
        query = select(func.count()).select_from(_WITH_OUTBOX).where(*_message_conditions(where or MessageQuery()))
        with self._reading() as conn:
            return int(conn.execute(query).scalar_one())

    def record_ids(self, status: Status) -> list[str]:
        """The ids of every record in ``status``, oldest first."""
        query = (
            select(messages.c.id)
            .select_from(_WITH_OUTBOX)
            .where(outbox.c.state == status.value)
            .order_by(messages.c.received_at, messages.c.id)
        )
        with self._reading() as conn:
            return list(conn.execute(query).scalars())

    def count_by_status(self) -> dict[Status, int]:
        """How many messages are in each state (every state present, zero included)."""
        query = select(outbox.c.state, func.count()).group_by(outbox.c.state)
        with self._reading() as conn:
            counts = {Status(state): int(n) for state, n in conn.execute(query)}
        return {status: counts.get(status, 0) for status in Status}

    def delivery_history(self, record_id: str) -> list[DeliveryAttempt]:
        """Every delivery attempt for the record, oldest first."""
        query = (
            select(delivery_attempts)
            .where(delivery_attempts.c.message_record_id == record_id)
            .order_by(delivery_attempts.c.id)
        )
        with self._reading() as conn:
            return [
                DeliveryAttempt(
                    owner=row.owner,
                    target=row.target,
                    started_at=_as_utc(row.started_at),
                    finished_at=_optional_utc(row.finished_at),
                    outcome=None if row.outcome is None else AttemptOutcome(row.outcome),
                    error=row.error,
                )
                for row in conn.execute(query)
            ]

    # -- rejections ------------------------------------------------------------------------------------------

    def record_rejection(self, rejection: Rejection) -> None:
        """Keep one refused request (see :class:`Rejection`). Raises :class:`StoreError`; callers on the
        request path must not let that change the answer (:func:`adaptor.soap.note_rejection`)."""
        with self._transaction() as conn:
            conn.execute(
                insert(rejections).values(
                    rejected_at=utc_now(),
                    rule=(rejection.rule or "")[:16],
                    error_code=rejection.error_code,
                    error_text=rejection.error_text[:2000],
                    error_id=rejection.error_id[:64],
                    message_id=_clip_field(rejection.message_id),
                    tracking_id=_clip_field(rejection.tracking_id),
                    sender_ods=_clip_field(rejection.sender_ods),
                )
            )

    def list_rejections(self, *, limit: int = 100, offset: int = 0) -> list[Rejection]:
        """Refused requests, newest first."""
        query = (
            select(rejections)
            .order_by(rejections.c.rejected_at.desc(), rejections.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        with self._reading() as conn:
            return [
                Rejection(
                    rule=row.rule,
                    error_code=row.error_code,
                    error_text=row.error_text,
                    error_id=row.error_id,
                    message_id=row.message_id,
                    tracking_id=row.tracking_id,
                    sender_ods=row.sender_ods,
                    rejected_at=_as_utc(row.rejected_at),
                )
                for row in conn.execute(query)
            ]

    def count_rejections(self) -> int:
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(rejections)).scalar_one())

    def possible_redeliveries(self) -> list[Redelivery]:
        """Delivered messages with interrupted attempts, oldest first.

        An interrupted attempt was started and never recorded: the process stopped somewhere between starting
        it and recording the result, possibly after the target had accepted the Bundle. Each is therefore at
        most one extra copy at the target, carrying the same MessageID (``messageId`` property), which
        consumers use to drop it. This is an upper bound: a process stopped before sending counts too.
        """
        interrupted = func.count(delivery_attempts.c.id)
        query = (
            select(messages.c.id, messages.c.message_id, interrupted)
            .select_from(_WITH_OUTBOX.join(delivery_attempts, delivery_attempts.c.message_record_id == messages.c.id))
            .where(
                outbox.c.state == Status.DELIVERED.value,
                delivery_attempts.c.outcome == AttemptOutcome.INTERRUPTED.value,
            )
            .group_by(messages.c.id, messages.c.message_id, messages.c.received_at)
            .order_by(messages.c.received_at, messages.c.id)
        )
        with self._reading() as conn:
            return [Redelivery(record_id, message_id, int(n)) for record_id, message_id, n in conn.execute(query)]


def _describe(exc: BaseException) -> str:
    """A one-line cause without the SQL statement or its parameters (they would carry message content).

    Only the driver message's first line: PostgreSQL's DETAIL lines can quote a whole row ("Failing row
    contains ..."), request bytes included.
    """
    if isinstance(exc, SQLAlchemyError):
        original = getattr(exc, "orig", None)
        if original is not None:
            first_line = (str(original).strip().splitlines() or [""])[0]
            return f"{type(original).__name__}: {first_line}"
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
