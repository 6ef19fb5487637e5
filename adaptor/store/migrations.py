"""The message store's schema versions: a ``schema_version`` table and ordered, explicit migration steps.

The same steps build the same schema on SQLite and on PostgreSQL; ``nhs111 db upgrade`` applies the pending
ones (:func:`upgrade`), ``nhs111 db current`` shows where a database stands (:func:`read_state`).

``schema_version``
    One row per step applied: its version, what it did, when. The database's version is the highest one.
    A database from before versioning (a ``messages.db`` written by adaptor 0.1) has the store's tables and no
    ``schema_version`` table: it is *unversioned*, and step 1 adopts it (see :func:`_step_1`).

What ``nhs111 serve`` and ``nhs111 worker`` do at start (:meth:`adaptor.store.MessageStore.open`, through
:func:`create_if_empty`): an empty database is given the whole schema at once; a database at this adaptor's
version is used as it is; an older (or unversioned) one is refused with a line naming ``nhs111 db upgrade``,
so a schema change is always an operator's deliberate step (a backup first, one migration for all replicas,
its errors in one place), never a side effect of a replica restarting. A *newer* database is used when every
table still has every column this adaptor reads and writes (migrations add, they do not take away), so that
replicas of the previous release keep working during a rolling upgrade; otherwise it is refused too.

Every upgrade, and the creation of an empty database, runs in one transaction (both databases have
transactional DDL: a failed step leaves the database as it was) under a lock, so replicas starting together
or two ``db upgrade`` runs never apply a step twice: a PostgreSQL transaction-level advisory lock, or SQLite's
``BEGIN EXCLUSIVE`` (other writers wait on the busy timeout).

Adding a step: append a :class:`Step` with the next version number and a function that changes the schema
through the connection it is given (Core DDL, or ``ALTER TABLE ... ADD COLUMN`` text that both databases
accept; SQLite alters little else, so bigger changes create a new table, copy, drop and rename). Never edit an
applied step: it describes what deployed databases already are. Then change the tables in
:mod:`adaptor.store.schema` to match; ``tests/test_migrations.py`` checks that the steps build exactly those tables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

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
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Connection

from adaptor.itk.documents import document_keys_of_request
from adaptor.itk.wire import as_utc, utc_now
from adaptor.store.schema import version_4_tables

log = logging.getLogger("adaptor.migrations")  # pinned: the JSON log format names it

#: The key of the PostgreSQL advisory lock held while the schema is created or upgraded (any constant: advisory
#: locks are per database; the only others a database of ours sees are the document locks of the accept path,
#: hashes of document ids, which this one does not meet in practice). The ASCII of "nhs111db".
ADVISORY_LOCK_KEY = int.from_bytes(b"nhs111db", "big")

#: The tables any step ever created, but ``schema_version``: a database with none of them is empty for us (a
#: shared PostgreSQL database may hold other applications' tables).
STORE_TABLES = frozenset(
    {
        "messages",
        "outbox",
        "delivery_attempts",
        "rejections",
        "bundle_versions",
        "message_index",
        "operator_actions",
        "nullifications",
        "nullified_messages",
    }
)

_versions_metadata = MetaData()
schema_version = Table(
    "schema_version",
    _versions_metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False),  # UTC
)


class SchemaError(RuntimeError):
    """The database's schema cannot be used or upgraded as it is; the message says why."""


@dataclass(frozen=True)
class Step:
    """One migration: ``apply`` brings a database at ``version - 1`` to ``version`` (inside the caller's
    transaction, under the lock)."""

    version: int
    description: str
    apply: Callable[[Connection], None]


@dataclass(frozen=True)
class AppliedStep:
    version: int
    description: str
    applied_at: datetime


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands. ``version`` is ``None`` without a ``schema_version`` table (or row)."""

    version: int | None
    tables: frozenset[str]  # which of STORE_TABLES exist
    history: tuple[AppliedStep, ...] = ()

    @property
    def empty(self) -> bool:
        return self.version is None and not self.tables

    @property
    def unversioned(self) -> bool:
        """Tables from before schema versioning (adaptor 0.1): step 1 adopts them."""
        return self.version is None and bool(self.tables)

    @property
    def number(self) -> int:
        """The version as a number: 0 for an empty or unversioned database."""
        return self.version or 0


@dataclass(frozen=True)
class UpgradeResult:
    before: SchemaState
    applied: tuple[Step, ...]
    after: int


# -- the steps ---------------------------------------------------------------------------------------------------


def version_1_tables() -> MetaData:
    """The four tables as version 1 made them: the layout adaptor 0.1 created without versioning.

    A frozen copy, deliberately not :data:`adaptor.store.schema.metadata`: the store's tables follow the latest
    version, while this must go on describing what deployed version-1 databases are.
    """
    tables = MetaData()
    messages = Table(
        "messages",
        tables,
        Column("id", String(36), primary_key=True),
        Column("message_id", Text, nullable=False),
        Column("tracking_id", Text, nullable=False),
        Column("digest", String(64), nullable=False),
        Column("service", Text, nullable=False),
        Column("interaction", Text, nullable=False),
        Column("ods_codes", Text, nullable=False),
        Column("dos_ids", Text, nullable=False),
        Column("sender", Text, nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False),
        Column("raw", LargeBinary, nullable=False),
        Column("bundle", Text, nullable=True),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        UniqueConstraint("message_id", "tracking_id", "digest", name="uq_messages_identity"),
    )
    Index("ix_messages_message_id", messages.c.message_id)
    Index("ix_messages_tracking_id", messages.c.tracking_id)
    Index("ix_messages_received_at", messages.c.received_at)
    outbox = Table(
        "outbox",
        tables,
        Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", DateTime(timezone=True), nullable=False),
        Column("lease_owner", Text, nullable=True),
        Column("lease_expires_at", DateTime(timezone=True), nullable=True),
        Column("synchronous", Integer, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("delivered_at", DateTime(timezone=True), nullable=True),
        Column("replays", Integer, nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    Index("ix_outbox_due", outbox.c.state, outbox.c.next_attempt_at)
    attempts = Table(
        "delivery_attempts",
        tables,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("message_record_id", String(36), ForeignKey("messages.id"), nullable=False),
        Column("owner", Text, nullable=False),
        Column("target", Text, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True), nullable=True),
        Column("outcome", String(32), nullable=True),
        Column("error", Text, nullable=True),
    )
    Index("ix_delivery_attempts_record", attempts.c.message_record_id)
    Index("ix_delivery_attempts_outcome", attempts.c.outcome)
    rejections = Table(
        "rejections",
        tables,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("rejected_at", DateTime(timezone=True), nullable=False),
        Column("rule", String(16), nullable=False),
        Column("error_code", Integer, nullable=False),
        Column("error_text", Text, nullable=False),
        Column("error_id", String(64), nullable=False),
        Column("message_id", Text, nullable=True),
        Column("tracking_id", Text, nullable=True),
        Column("sender_ods", Text, nullable=True),
    )
    Index("ix_rejections_rejected_at", rejections.c.rejected_at)
    return tables


def _step_1(conn: Connection) -> None:
    """Create the version-1 tables that are missing; check that those already there have the version-1 layout.

    On an empty database this creates everything. On an unversioned one it adopts what adaptor 0.1 made:
    nothing to change but, for databases older than the ``rejections`` table, that table (0.1 created missing
    tables at every start in the same way). Tables of another layout are refused by name rather than left to
    fail on every insert later.
    """
    tables = version_1_tables()
    present = set(inspect(conn).get_table_names()) & set(tables.tables)
    problems = layout_problems(conn, [tables.tables[name] for name in sorted(present)])
    if problems:
        raise SchemaError(f"incompatible layout ({'; '.join(problems)}): it was not created by this adaptor")
    tables.create_all(conn, checkfirst=True)


def _step_2(conn: Connection) -> None:
    """Bundles made at acceptance, in versions: ``messages.bundle_version`` and ``messages.converted_at``, and
    the version each attempt sent (``delivery_attempts.bundle_version``). All nullable: a message stored before
    this step has no Bundle yet (its first delivery converts it as version 1), and rejected messages have none.

    A Bundle that an earlier adaptor kept after a delivery attempt is the one it sent: it becomes version 1, made
    when it was kept (the row's ``updated_at``, which only that and a replay changed), so that its later
    attempts carry one creation time.
    """
    for table, column, kind in (
        ("messages", "bundle_version", Integer()),
        ("messages", "converted_at", DateTime(timezone=True)),
        ("delivery_attempts", "bundle_version", Integer()),
    ):
        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind.compile(dialect=conn.dialect)}"))
    conn.execute(text("UPDATE messages SET bundle_version = 1, converted_at = updated_at WHERE bundle IS NOT NULL"))


def _step_3(conn: Connection) -> None:
    """Superseded Bundle versions: the ``bundle_versions`` table, where a reconversion keeps the Bundle it replaces
    (as it was stored, and so as the attempts that carried it sent it), in the transaction that replaces it.

    Nothing to fill: the Bundles earlier reconversions replaced were not kept, so a message reconverted before this
    step has only its current version. A replica of the previous release still running on the upgraded database
    (a rolling upgrade) does not write this table either: a reconversion made by it loses the version it replaces,
    as before. The table as this step made it is frozen here, like :func:`version_1_tables`.
    """
    tables = MetaData()
    Table("messages", tables, Column("id", String(36), primary_key=True))  # what the foreign key refers to
    versions = Table(
        "bundle_versions",
        tables,
        Column("message_record_id", String(36), ForeignKey("messages.id"), primary_key=True),
        Column("version", Integer, primary_key=True, autoincrement=False),
        Column("bundle", Text, nullable=False),
        Column("converted_at", DateTime(timezone=True), nullable=True),
        Column("superseded_at", DateTime(timezone=True), nullable=False),
    )
    versions.create(conn)


def _step_4(conn: Connection) -> None:
    """Search and operators' actions: the ``message_index`` table (what operators search by: the patient, the
    disposition, the parties, the document's time, the conversion's warnings) and ``operator_actions`` (who
    replayed a message, when, how), made by :func:`adaptor.store.schema.version_4_tables`; and an index of the
    outbox's states by record (``ix_outbox_state_of``), from which a search counts what it finds by state.

    Every stored message gets its index row here, with only what can be copied without reading its Bundle: the
    MessageID, trackingid and record id (``indexed`` = 0). Reading every stored Bundle would hold the upgrade's
    transaction (and so every replica) for as long as that takes on a big database, so ``nhs111 db reindex``
    fills the rest afterwards, in batches, while the adaptor runs; until it has, those messages are found by
    their identifiers only.
    """
    tables = MetaData()
    Table("messages", tables, Column("id", String(36), primary_key=True))  # what the foreign keys refer to
    for table in version_4_tables(tables):
        table.create(conn)
    outbox = Table("outbox", tables, Column("record_id", String(36)), Column("state", String(16)))
    Index("ix_outbox_state_of", outbox.c.record_id, outbox.c.state).create(conn)
    conn.execute(
        text(
            "INSERT INTO message_index (record_id, received_at, indexed, message_key, tracking_key, record_key) "
            "SELECT id, received_at, 0, lower(message_id), lower(tracking_id), lower(id) FROM messages"
        )
    )


#: How many stored requests step 5 reads at a time to find their document identifiers.
BACKFILL_BATCH = 200


def _step_5(conn: Connection) -> None:
    """Nullification (nullification.md): the identifiers of each message's document (``messages.document_id``,
    ``document_set_id``, ``document_version``, indexed), by which a nullification finds the message it withdraws;
    the ``nullifications`` a sender sent; and the ``nullified_messages``, each with the nullification that
    withdrew it and the Bundle version that withdraws it at the receiver's system.

    The identifiers of the messages already stored are read from their requests as received (the document the
    Bundle is mapped from, as validation selects it), so that a nullification of a message received before the
    upgrade finds it. A request that cannot be read (none the adaptor accepted should be: validation read it)
    keeps none, and no nullification can find it. The tables as this step made them are frozen here, like
    :func:`version_1_tables`.
    """
    for column, kind in (("document_id", Text()), ("document_set_id", Text()), ("document_version", Integer())):
        conn.execute(text(f"ALTER TABLE messages ADD COLUMN {column} {kind.compile(dialect=conn.dialect)}"))
    tables = MetaData()
    messages = Table(
        "messages",
        tables,
        Column("id", String(36), primary_key=True),
        Column("raw", LargeBinary),
        Column("document_id", Text),
        Column("document_set_id", Text),
        Column("document_version", Integer),
    )
    Index("ix_messages_document_id", messages.c.document_id).create(conn)
    Index("ix_messages_document_set", messages.c.document_set_id, messages.c.document_version).create(conn)
    nullifications = Table(
        "nullifications",
        tables,
        Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),
        Column("document_id", Text, nullable=True),
        Column("withdraws_id", Text, nullable=True),
        Column("withdraws_set_id", Text, nullable=True),
        Column("withdraws_version", Integer, nullable=True),
        Column("reason_code", Text, nullable=True),
        Column("reason_display", Text, nullable=True),
        Column("reason_text", Text, nullable=True),
        Column("author", Text, nullable=True),
        Column("effective_at", DateTime(timezone=True), nullable=False),
    )
    Index("ix_nullifications_withdraws_id", nullifications.c.withdraws_id)
    Index("ix_nullifications_withdraws_set", nullifications.c.withdraws_set_id, nullifications.c.withdraws_version)
    nullified = Table(
        "nullified_messages",
        tables,
        Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),
        Column("nullification_id", String(36), ForeignKey("nullifications.record_id"), nullable=False),
        Column("nullified_at", DateTime(timezone=True), nullable=False),
        Column("withdrawal_version", Integer, nullable=True),
    )
    Index("ix_nullified_messages_nullification", nullified.c.nullification_id)
    nullifications.create(conn)
    nullified.create(conn)

    ids = list(conn.execute(select(messages.c.id).order_by(messages.c.id)).scalars())
    found = 0
    for start in range(0, len(ids), BACKFILL_BATCH):
        batch = ids[start : start + BACKFILL_BATCH]
        for record_id, raw in conn.execute(select(messages.c.id, messages.c.raw).where(messages.c.id.in_(batch))).all():
            keys = document_keys_of_request(raw)
            if keys is None or not (keys.document_id or keys.set_id):
                continue
            conn.execute(
                messages.update()
                .where(messages.c.id == record_id)
                .values(document_id=keys.document_id, document_set_id=keys.set_id, document_version=keys.version)
            )
            found += 1
    if ids:
        log.info("schema: document identifiers read for %d of %d stored messages", found, len(ids))


#: Every step, in order; the last one's version is the version this adaptor reads and writes.
STEPS: tuple[Step, ...] = (
    Step(1, "the message store: messages, outbox, delivery_attempts, rejections", _step_1),
    Step(2, "Bundles converted at acceptance, in versions: messages.bundle_version, converted_at", _step_2),
    Step(3, "superseded Bundle versions kept: bundle_versions", _step_3),
    Step(4, "search index and operators' actions: message_index, operator_actions", _step_4),
    Step(5, "nullification: messages.document_*, nullifications, nullified_messages", _step_5),
)


def head_version() -> int:
    """The schema version this adaptor needs (the last step's)."""
    return STEPS[-1].version


# -- reading and checking ------------------------------------------------------------------------------------------


def read_state(conn: Connection) -> SchemaState:
    """The database's version, which store tables it has, and the steps recorded as applied."""
    names = set(inspect(conn).get_table_names())
    history: tuple[AppliedStep, ...] = ()
    if schema_version.name in names:
        rows = conn.execute(select(schema_version).order_by(schema_version.c.version)).all()
        history = tuple(AppliedStep(row.version, row.description, as_utc(row.applied_at)) for row in rows)
    version = max((step.version for step in history), default=None)
    return SchemaState(version=version, tables=frozenset(names & STORE_TABLES), history=history)


def layout_problems(conn: Connection, tables: Sequence[Table]) -> list[str]:
    """What stops code written for ``tables`` from using the database's tables of the same names: a missing
    table, a missing column, or a ``NOT NULL`` column without a default that the code would never fill.

    Extra nullable columns are fine (a newer schema may add them), and types are not compared.
    """
    inspector = inspect(conn)
    existing_tables = set(inspector.get_table_names())
    problems: list[str] = []
    for table in tables:
        if table.name not in existing_tables:
            problems.append(f"table {table.name} is missing")
            continue
        existing = {column["name"]: column for column in inspector.get_columns(table.name)}
        missing = sorted(set(table.c.keys()) - set(existing))
        unknown_required = sorted(
            name
            for name, column in existing.items()
            if name not in table.c and not column.get("nullable", True) and column.get("default") is None
        )
        if missing:
            problems.append(f"table {table.name} lacks {', '.join(missing)}")
        if unknown_required:
            problems.append(f"table {table.name} requires {', '.join(unknown_required)}")
    return problems


# -- changing ------------------------------------------------------------------------------------------------------


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other schema change runs beside; committed on a normal exit,
    rolled back on an exception.

    PostgreSQL: ``pg_advisory_xact_lock``, released by the commit (or by the server if the process dies).
    SQLite: ``BEGIN EXCLUSIVE``, which also makes every other writer wait (their busy timeout) while the
    schema changes. pysqlite would open its own deferred transaction, so the connection is put in autocommit
    mode and the transaction is begun and ended here, explicitly. Any other database: a plain transaction.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN EXCLUSIVE")
            try:
                yield conn
            except BaseException:
                conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        else:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
                yield conn


def _apply_pending(conn: Connection, state: SchemaState) -> tuple[Step, ...]:
    pending = tuple(step for step in STEPS if step.version > state.number)
    if pending:
        _versions_metadata.create_all(conn, checkfirst=True)
    for step in pending:
        log.info("schema: applying step %d (%s)", step.version, step.description)
        step.apply(conn)
        description = step.description
        if step.version == 1 and state.unversioned:
            description += " (adopted the tables of a database from before schema versioning)"
        conn.execute(insert(schema_version).values(version=step.version, description=description, applied_at=utc_now()))
    return pending


def upgrade(engine: Engine) -> UpgradeResult:
    """``nhs111 db upgrade``: apply every pending step, in order, in one transaction under the lock.

    Idempotent: a database already at (or beyond) this adaptor's version is left alone. Raises
    :class:`SchemaError` when a step finds a layout it cannot work from (nothing is changed then), and
    SQLAlchemy's errors when the database fails.
    """
    with locked(engine) as conn:
        before = read_state(conn)
        applied = _apply_pending(conn, before)
    return UpgradeResult(before=before, applied=applied, after=max(before.number, head_version()))


def create_if_empty(engine: Engine) -> SchemaState:
    """At start-up: give an empty database the whole schema (under the lock, so that replicas starting together
    create it once); return the state of the database, which the caller judges (see the module docstring)."""
    with engine.connect() as conn:
        state = read_state(conn)
    if not state.empty:
        return state
    with locked(engine) as conn:
        state = read_state(conn)
        if state.empty:  # nobody else created it while this process waited for the lock
            _apply_pending(conn, state)
            log.info("schema: created the message store tables at version %d", head_version())
            state = read_state(conn)
    return state
