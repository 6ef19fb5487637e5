"""The message store: every accepted request, durably, before the sender is told ``OK``.

SQLAlchemy Core only (no ORM), portable column types, so the default SQLite file under the data directory can
be swapped for PostgreSQL by changing ``PEM111_DATABASE_URL`` and nothing else.

A message is identified by (MessageID, trackingid, DistributionEnvelope digest): an identical resend finds the
stored record instead of creating a second one, while a reused MessageID with different content is a new
message (wire-contract.md section 5.3). Every database failure surfaces as :class:`StoreError`, which the
receiver answers with the retryable 2100 fault.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
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
    create_engine,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from .config import Settings
from .message import ItkMessage

log = logging.getLogger(__name__)

#: How long a writer waits for another thread's SQLite transaction before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000


class Status(enum.StrEnum):
    """Where a stored message is in the pipeline."""

    ACCEPTED = "accepted"
    CONVERTED = "converted"
    CONVERSION_FAILED = "conversion_failed"
    DELIVERED = "delivered"
    DELIVERY_FAILED = "delivery_failed"


class StoreError(RuntimeError):
    """The store could not read or write; the message was not (or may not have been) recorded."""


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
    Column("status", String(32), nullable=False),
    Column("status_reason", Text, nullable=True),
    Column("raw", LargeBinary, nullable=False),  # the request exactly as received
    Column("bundle", Text, nullable=True),  # the FHIR Bundle JSON, once converted
    Column("updated_at", DateTime(timezone=True), nullable=False),  # UTC
    UniqueConstraint("message_id", "tracking_id", "digest", name="uq_messages_identity"),
)
Index("ix_messages_message_id", messages.c.message_id)
Index("ix_messages_status", messages.c.status)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_record_id", String(36), ForeignKey("messages.id"), nullable=False),
    Column("attempted_at", DateTime(timezone=True), nullable=False),
    Column("target", Text, nullable=False),
    Column("succeeded", Integer, nullable=False),  # 1 or 0: portable where BOOLEAN is not
    Column("detail", Text, nullable=True),
)
Index("ix_delivery_attempts_record", delivery_attempts.c.message_record_id)

# The columns a listing returns: everything except the two potentially large documents.
_SUMMARY_COLUMNS = [c for c in messages.c if c.name not in ("raw", "bundle")]


@dataclass(frozen=True)
class StoredMessage:
    """One row of ``messages``. ``raw`` and ``bundle`` are ``None`` in listings (not loaded)."""

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
    status_reason: str | None
    updated_at: datetime
    raw: bytes | None = None
    bundle: str | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    attempted_at: datetime
    target: str
    succeeded: bool
    detail: str | None


def utc_now() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # SQLite has no time zone type: values come back naive, but they were written as UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _row_to_message(row: Any) -> StoredMessage:
    mapping = row._mapping
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
        status=Status(mapping["status"]),
        status_reason=mapping["status_reason"],
        updated_at=_as_utc(mapping["updated_at"]),
        raw=mapping.get("raw"),
        bundle=mapping.get("bundle"),
    )


def _configure_sqlite(engine: Engine) -> None:
    """WAL (readers never block the writer), a busy timeout (writers queue instead of failing) and
    ``synchronous=FULL`` (a commit is on disk before it returns: the sender is told OK only after that)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()


class MessageStore:
    """The ``messages`` and ``delivery_attempts`` tables behind a small, thread-safe API.

    Safe to share between request threads: each call checks a connection out of the engine's pool and commits
    before returning. The schema is created by :meth:`open`; when the database is unreachable at start-up the
    store still constructs and every call retries (and raises :class:`StoreError` until it succeeds), so a
    database that comes up late does not need a restart.
    """

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.is_sqlite = url.get_backend_name() == "sqlite"
        engine_options: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            # The busy timeout, not the pool, serialises writers; pysqlite's thread check is moot with a pool.
            engine_options["connect_args"] = {
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "check_same_thread": False,
            }
        else:
            engine_options["pool_pre_ping"] = True
        self._url = url
        self.engine = create_engine(url, **engine_options)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MessageStore:
        return cls(settings.resolved_database_url)

    @property
    def url(self) -> str:
        """The database URL with any password masked (for logs)."""
        return self._url.render_as_string(hide_password=True)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the tables (and the SQLite file's folder) if needed. Raises :class:`StoreError`."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                if self.is_sqlite and self._url.database and self._url.database != ":memory:":
                    Path(self._url.database).parent.mkdir(parents=True, exist_ok=True)
                metadata.create_all(self.engine)
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(f"cannot open the message store {self.url}: {_describe(exc)}") from exc
            self._schema_ready = True

    def open_if_available(self) -> bool:
        """:meth:`open`, but an unreachable database is logged instead of raised: the service starts anyway,
        answers 2100 meanwhile, and every call retries. Returns whether the store is open."""
        try:
            self.open()
        except StoreError as exc:
            log.warning("message store unavailable at start-up, answering 2100 until it is: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A committed-on-exit transaction; any database failure becomes :class:`StoreError`."""
        self.open()
        try:
            with self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"message store failure: {_describe(exc)}") from exc

    # -- writes ----------------------------------------------------------------------------------------------

    def accept(self, message: ItkMessage, raw: bytes) -> tuple[str, bool]:
        """Record ``message`` (and the request bytes ``raw``) with status ``accepted``; committed on return.

        Returns ``(record_id, is_new)``. An identical resend (same MessageID, trackingid and digest) returns
        the existing record's id and ``False`` and writes nothing.
        """
        now = utc_now()
        record_id = str(uuid.uuid4())
        row = {
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
            "status": Status.ACCEPTED.value,
            "status_reason": None,
            "raw": raw,
            "bundle": None,
            "updated_at": now,
        }
        try:
            # Insert first: new messages are the common case, and the unique constraint (not a prior SELECT)
            # decides a race between two copies of the same resend arriving at once.
            with self._transaction() as conn:
                conn.execute(insert(messages).values(**row))
            return record_id, True
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        existing = self._find_identity(message.message_id, message.tracking_id, message.digest)
        if existing is None:  # the IntegrityError was not the identity constraint after all
            raise StoreError("message store rejected the new record")
        return existing, False

    def _find_identity(self, message_id: str, tracking_id: str, digest: str) -> str | None:
        query = select(messages.c.id).where(
            messages.c.message_id == message_id,
            messages.c.tracking_id == tracking_id,
            messages.c.digest == digest,
        )
        with self._transaction() as conn:
            return conn.execute(query).scalar_one_or_none()

    def set_status(self, record_id: str, status: Status, reason: str | None = None) -> None:
        """Set the status (and its reason, cleared when ``None``)."""
        with self._transaction() as conn:
            self._update(conn, record_id, status=status.value, status_reason=reason)

    def record_conversion(self, record_id: str, bundle_json: str) -> None:
        """Keep the Bundle and mark the message ``converted``."""
        with self._transaction() as conn:
            self._update(conn, record_id, status=Status.CONVERTED.value, status_reason=None, bundle=bundle_json)

    def record_delivery(self, record_id: str, target: str, *, succeeded: bool, detail: str | None = None) -> None:
        """Log one delivery attempt and set ``delivered`` / ``delivery_failed`` (reason ``detail``)."""
        now = utc_now()
        status = Status.DELIVERED if succeeded else Status.DELIVERY_FAILED
        with self._transaction() as conn:
            conn.execute(
                insert(delivery_attempts).values(
                    message_record_id=record_id,
                    attempted_at=now,
                    target=target,
                    succeeded=1 if succeeded else 0,
                    detail=detail,
                )
            )
            self._update(conn, record_id, status=status.value, status_reason=None if succeeded else detail)

    @staticmethod
    def _update(conn: Connection, record_id: str, **values: Any) -> None:
        result = conn.execute(update(messages).where(messages.c.id == record_id).values(updated_at=utc_now(), **values))
        if result.rowcount != 1:
            raise StoreError(f"no stored message with id {record_id}")

    # -- reads -----------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> StoredMessage | None:
        """The full record (with ``raw`` and ``bundle``), or ``None``."""
        with self._transaction() as conn:
            row = conn.execute(select(messages).where(messages.c.id == record_id)).first()
        return None if row is None else _row_to_message(row)

    def find_by_message_id(self, message_id: str) -> list[StoredMessage]:
        """Every record with this wsa:MessageID (MessageIDs are reused), oldest first, with content."""
        query = select(messages).where(messages.c.message_id == message_id).order_by(messages.c.received_at)
        with self._transaction() as conn:
            return [_row_to_message(row) for row in conn.execute(query)]

    def list_messages(
        self, *, statuses: Sequence[Status] = (), limit: int = 100, offset: int = 0
    ) -> list[StoredMessage]:
        """Records newest first, without ``raw`` and ``bundle``; optionally only the given statuses."""
        query = select(*_SUMMARY_COLUMNS).order_by(messages.c.received_at.desc(), messages.c.id)
        if statuses:
            query = query.where(messages.c.status.in_([s.value for s in statuses]))
        query = query.limit(limit).offset(offset)
        with self._transaction() as conn:
            return [_row_to_message(row) for row in conn.execute(query)]

    def delivery_history(self, record_id: str) -> list[DeliveryAttempt]:
        """Every delivery attempt for the record, oldest first."""
        query = (
            select(delivery_attempts)
            .where(delivery_attempts.c.message_record_id == record_id)
            .order_by(delivery_attempts.c.id)
        )
        with self._transaction() as conn:
            return [
                DeliveryAttempt(
                    attempted_at=_as_utc(row.attempted_at),
                    target=row.target,
                    succeeded=bool(row.succeeded),
                    detail=row.detail,
                )
                for row in conn.execute(query)
            ]


def _describe(exc: BaseException) -> str:
    """A one-line cause without the SQL statement or its parameters (they would carry message content)."""
    if isinstance(exc, SQLAlchemyError):
        original = getattr(exc, "orig", None)
        if original is not None:
            return f"{type(original).__name__}: {original}"
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
