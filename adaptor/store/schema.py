"""The store's tables as this adaptor reads and writes them (the latest schema version).

:mod:`adaptor.store.migrations` builds them, step by step, in a database; ``tests/test_migrations.py`` checks that
the steps build exactly these tables. Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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
    # The Bundle every delivery sends: converted once when the message was accepted, replaced only by an
    # operator's reconversion, which makes a new version (the one it replaces is kept in ``bundle_versions``).
    # NULL: none (a rejected message, or one stored by an adaptor before schema version 2 and not yet delivered).
    Column("bundle", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),  # UTC
    # Added by schema version 2, hence last:
    Column("bundle_version", Integer, nullable=True),  # 1 for the first Bundle, +1 for each reconversion
    Column("converted_at", DateTime(timezone=True), nullable=True),  # UTC, when ``bundle`` was made
    # Added by schema version 5: what identifies the document the Bundle is mapped from, as
    # adaptor.itk.documents.identifier_key writes it (upper case), so that a nullification finds it. NULL for a
    # nullification (see ``nullifications``) and when the document has none.
    Column("document_id", Text, nullable=True),
    Column("document_set_id", Text, nullable=True),
    Column("document_version", Integer, nullable=True),
    UniqueConstraint("message_id", "tracking_id", "digest", name="uq_messages_identity"),
)
Index("ix_messages_message_id", messages.c.message_id)
Index("ix_messages_tracking_id", messages.c.tracking_id)
Index("ix_messages_received_at", messages.c.received_at)
Index("ix_messages_document_id", messages.c.document_id)
Index("ix_messages_document_set", messages.c.document_set_id, messages.c.document_version)

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
# Added by schema version 4: a search finds a message's state from this index alone (the record's outbox row is not
# read), which is most of the time of counting what a search finds by state.
Index("ix_outbox_state_of", outbox.c.record_id, outbox.c.state)

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
    Column("bundle_version", Integer, nullable=True),  # the version of the Bundle sent; NULL: none was
)
Index("ix_delivery_attempts_record", delivery_attempts.c.message_record_id)
Index("ix_delivery_attempts_outcome", delivery_attempts.c.outcome)

bundle_versions = Table(
    "bundle_versions",
    metadata,
    # Added by schema version 3. One row per Bundle a reconversion replaced, kept as it was stored (and so as
    # every attempt that carried it sent it); the current version stays in ``messages``.
    Column("message_record_id", String(36), ForeignKey("messages.id"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),  # messages.bundle_version it had
    Column("bundle", Text, nullable=False),
    Column("converted_at", DateTime(timezone=True), nullable=True),  # UTC, messages.converted_at it had
    Column("superseded_at", DateTime(timezone=True), nullable=False),  # UTC, when the reconversion replaced it
)

nullifications = Table(
    "nullifications",
    metadata,
    # Added by schema version 5. One row per stored nullification (nullification.md): the message that withdraws a
    # document sent in error. What it withdraws is named as ``messages.document_*`` name documents.
    Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),  # the nullification's message
    Column("document_id", Text, nullable=True),  # the nullification document's own id
    Column("withdraws_id", Text, nullable=True),  # parentDocument id
    Column("withdraws_set_id", Text, nullable=True),  # parentDocument setId
    Column("withdraws_version", Integer, nullable=True),  # parentDocument versionNumber
    Column("reason_code", Text, nullable=True),  # code system 2.16.840.1.113883.2.1.3.2.4.17.176
    Column("reason_display", Text, nullable=True),
    Column("reason_text", Text, nullable=True),
    Column("author", Text, nullable=True),  # the author's name and organisation, as one line
    Column("effective_at", DateTime(timezone=True), nullable=False),  # UTC, the nullification's effectiveTime
)
Index("ix_nullifications_withdraws_id", nullifications.c.withdraws_id)
Index("ix_nullifications_withdraws_set", nullifications.c.withdraws_set_id, nullifications.c.withdraws_version)

nullified_messages = Table(
    "nullified_messages",
    metadata,
    # Added by schema version 5. One row per message its sender withdrew: the nullification that did it, when this
    # adaptor applied it, and the Bundle version that withdraws it at the receiver's system (NULL: nothing of it
    # had been sent, so nothing is, ever).
    Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),  # the message withdrawn
    Column("nullification_id", String(36), ForeignKey("nullifications.record_id"), nullable=False),
    Column("nullified_at", DateTime(timezone=True), nullable=False),  # UTC
    Column("withdrawal_version", Integer, nullable=True),
)
Index("ix_nullified_messages_nullification", nullified_messages.c.nullification_id)

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


def version_4_tables(tables: MetaData) -> tuple[Table, Table]:
    """The two tables schema version 4 added, made in ``tables``: ``message_index`` and ``operator_actions``.

    A function, because migration step 4 makes them with it: while no later step changes them, the store's tables
    and the step's are one definition. A step that changes either table must first give step 4 a frozen copy of
    this function (as :func:`adaptor.store.migrations.version_1_tables` is), since an applied step never changes.

    ``message_index``: what operators search by, one row per message.

    Filled from the converted Bundle when a message is stored (and, for messages stored before, by
    ``nhs111 db reindex``; step 4 itself fills only the envelope's identifiers). The search keys are kept folded
    (lower-case; NHS numbers and postcodes without spaces) so that every search is an index lookup or an index
    range: a prefix is a range on SQLite (binary comparison) and ``LIKE 'prefix%'`` on PostgreSQL, whose
    ``text_pattern_ops`` indexes serve it whatever the database's collation.
    """
    index = Table(
        "message_index",
        tables,
        Column("record_id", String(36), ForeignKey("messages.id"), primary_key=True),
        Column("received_at", DateTime(timezone=True), nullable=False),  # messages.received_at, for the ranges
        # Which version of the extractor filled the row (:data:`adaptor.store.index.INDEX_VERSION`); 0: only the
        # envelope's identifiers (step 4 on a message stored before it): ``nhs111 db reindex`` fills the rest.
        Column("indexed", Integer, nullable=False),
        Column("message_key", Text, nullable=False),  # MessageID, lower-case
        Column("tracking_key", Text, nullable=False),  # trackingid, lower-case
        Column("record_key", String(36), nullable=False),  # record id, lower-case (prefix searches)
        Column("sender_ods", Text, nullable=True),  # upper-case
        Column("recipients", Text, nullable=True),  # " ODS1 ODS2 DOS1 ": upper-case, space-separated and -framed
        Column("nhs_number", String(16), nullable=True),  # digits only
        Column("family_key", Text, nullable=True),  # folded family name
        Column("given_key", Text, nullable=True),  # folded first given name
        Column("patient_name", Text, nullable=True),  # as shown: "Margaret Ada TESTWELL"
        Column("birth_date", String(10), nullable=True),  # YYYY-MM-DD (or YYYY-MM, YYYY as given)
        Column("postcode", String(16), nullable=True),  # upper-case, no spaces
        Column("disposition_code", String(32), nullable=True),  # upper-case, e.g. DX05
        Column("disposition", Text, nullable=True),  # the code's display text
        Column("receiving_service", Text, nullable=True),
        Column("effective_at", DateTime(timezone=True), nullable=True),  # the document's effective time, UTC
        Column("warnings", Text, nullable=True),  # JSON array of the conversion's warnings; NULL: none
    )
    # The prefix searches' indexes. The patient's also hold the received time and the record id, so that a search
    # counts and orders what it finds from the index alone, without reading the rows (a name prefix may match
    # thousands).
    for name, column, extra in (
        ("ix_message_index_message", "message_key", ()),
        ("ix_message_index_tracking", "tracking_key", ()),
        ("ix_message_index_record", "record_key", ()),
        ("ix_message_index_family", "family_key", ("received_at", "record_id")),
        ("ix_message_index_given", "given_key", ("received_at", "record_id")),
        ("ix_message_index_postcode", "postcode", ()),
    ):
        columns = [index.c[column], *(index.c[c] for c in extra)]
        Index(name, *columns, postgresql_ops={column: "text_pattern_ops"})
    Index("ix_message_index_nhs_number", index.c.nhs_number, index.c.received_at, index.c.record_id)
    Index("ix_message_index_received_at", index.c.received_at, index.c.record_id)
    Index("ix_message_index_birth_date", index.c.birth_date)
    Index("ix_message_index_sender", index.c.sender_ods)
    Index("ix_message_index_disposition", index.c.disposition_code)
    actions = Table(
        "operator_actions",
        tables,
        # One row per operator's action on a message (a replay: redeliver or reconvert), written in the
        # transaction that acts: who, when, what, and what came of it.
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("message_record_id", String(36), ForeignKey("messages.id"), nullable=False),
        Column("at", DateTime(timezone=True), nullable=False),  # UTC
        Column("operator", Text, nullable=False),  # the console user, "token", or "<os user> (nhs111 replay)"
        Column("action", String(32), nullable=False),  # "redeliver" or "reconvert"
        Column("detail", Text, nullable=False),  # e.g. "was dead_letter; Bundle version 2"
    )
    Index("ix_operator_actions_record", actions.c.message_record_id)
    return index, actions


message_index, operator_actions = version_4_tables(metadata)
