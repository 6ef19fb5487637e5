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
