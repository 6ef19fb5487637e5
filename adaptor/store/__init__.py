"""The message store: every accepted request, durably, before the sender is told ``OK``; and its outbox.

SQLAlchemy Core only (no ORM), portable column types and portable SQL, so the default SQLite file under the data
directory can be swapped for PostgreSQL (``PEM111_DATABASE_URL=postgresql://...``, driven by psycopg 3) by
changing that setting and nothing else. Several replicas may share one PostgreSQL store and its outbox; SQLite
suits one host (its file may be shared by the processes there: ``nhs111 serve`` and ``nhs111 worker``).
The schema is versioned and created or upgraded by :mod:`adaptor.store.migrations` (``nhs111 db upgrade``).

Seven tables:

``messages``
    One row per message that passed validation: the envelope facts, the request bytes exactly as received
    (``raw``) and the Bundle converted from them when the message was accepted (``bundle``, with its
    ``bundle_version``: every delivery sends these bytes; only an operator's reconversion makes a new version).
    A message that could not be converted is kept too, without a Bundle, in the state ``rejected``.
    A message is identified by (MessageID, trackingid,
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

``bundle_versions``
    One row per Bundle an operator's reconversion replaced, kept as it was stored (the text every attempt that
    carried it sent), with its version, when it was made and when it was replaced; written in the reconversion's
    transaction (see :meth:`MessageStore.bundle_versions`).

``nullifications`` and ``nullified_messages``
    One row per stored nullification (what it withdraws, why, who, when), and one per message its sender withdrew
    (which nullification, when, and the Bundle version that withdraws it at the receiver's system): see
    :mod:`~adaptor.store.nullifying`. Messages keep the identifiers of their document
    (``messages.document_*``) so that a nullification finds them.
``message_index``
    One row per message: what operators search by (the patient, the disposition, the parties, the document's
    time, the conversion's warnings), read from the Bundle when the message is stored (:mod:`.index`).
``operator_actions``
    One row per operator's replay of a message: who, when, how.

``rejections``
    One row per request answered with a fault: when, the rule, ErrorCode, ErrorText, the error id, and the
    request's MessageID, trackingid and sender ODS code when they could be read. Never the request body nor any
    patient data: it exists so that operators can count refusals and see why senders were refused.

Nothing is deleted but by retention (``nhs111 db purge``, :mod:`.upkeep`), which deletes only delivered
messages and rejections older than its settings allow, and only when they are set.

Claims are conditional ``UPDATE``\\s checked by row count, so two workers (threads,
processes, or replicas sharing a database) can never both own a message; a lease with an owner and an expiry
lets another worker take over the message of a worker that died. On PostgreSQL the outbox worker's claim first
locks the row it takes (``SELECT ... FOR UPDATE SKIP LOCKED``), so concurrent workers pass each other instead of
racing for the same row (see :meth:`MessageStore.claim_due`).

Every database failure surfaces as :class:`StoreError`; on the request path it is answered with the retryable
2100 fault.

The package, by concern: :mod:`~adaptor.store.records` (states, errors, the records handed out),
:mod:`~adaptor.store.schema` (the tables), :mod:`~adaptor.store.statements` (the SQL built once),
:mod:`~adaptor.store.engine` (connections, opening, schema checks, transactions), then :class:`MessageStore`'s
five parts: :mod:`~adaptor.store.accepting` (the request path), :mod:`~adaptor.store.nullifying` (storing a
nullification and withdrawing what it names), :mod:`~adaptor.store.claims` (the outbox: claims, attempts,
replays), :mod:`~adaptor.store.queries` (reads, searches and rejections) and :mod:`~adaptor.store.upkeep` (the
search index filled again, retention's purges); :mod:`~adaptor.store.index` (what the search index keeps of a
message); and :mod:`~adaptor.store.migrations` (schema versions).
"""

from __future__ import annotations

from adaptor.itk.wire import utc_now
from adaptor.store import migrations
from adaptor.store.claims import Claims, replay_refusal
from adaptor.store.engine import (
    CONNECT_TIMEOUT_SECONDS,
    POOL_MARGIN,
    SQLITE_BUSY_TIMEOUT_MS,
    sqlalchemy_url,
)
from adaptor.store.nullifying import Nullifying, WithdrawalMaker
from adaptor.store.queries import MAX_REJECTION_FIELD, Queries
from adaptor.store.records import (
    Accepted,
    AttemptOutcome,
    BundleVersion,
    Claim,
    DeliveryAttempt,
    Effect,
    IndexEntry,
    MessageQuery,
    NullificationStored,
    Nullified,
    OperatorAction,
    Original,
    Redelivery,
    Rejection,
    ReplayResult,
    SchemaVersionError,
    Status,
    StoredMessage,
    StoredNullification,
    StoreError,
    Withdrawn,
    versions_not_kept,
)
from adaptor.store.schema import (
    bundle_versions,
    delivery_attempts,
    message_index,
    messages,
    metadata,
    nullifications,
    nullified_messages,
    operator_actions,
    outbox,
    rejections,
)
from adaptor.store.statements import CLAIM_CANDIDATES, CLAIM_ROUNDS
from adaptor.store.upkeep import PurgeResult, RetentionPolicy, RetentionSchedule, Upkeep

__all__ = [
    "CLAIM_CANDIDATES",
    "CLAIM_ROUNDS",
    "CONNECT_TIMEOUT_SECONDS",
    "MAX_REJECTION_FIELD",
    "POOL_MARGIN",
    "SQLITE_BUSY_TIMEOUT_MS",
    "Accepted",
    "AttemptOutcome",
    "BundleVersion",
    "Claim",
    "DeliveryAttempt",
    "Effect",
    "IndexEntry",
    "MessageQuery",
    "MessageStore",
    "Nullified",
    "NullificationStored",
    "OperatorAction",
    "Original",
    "PurgeResult",
    "Redelivery",
    "Rejection",
    "ReplayResult",
    "RetentionPolicy",
    "RetentionSchedule",
    "SchemaVersionError",
    "Status",
    "StoreError",
    "StoredMessage",
    "StoredNullification",
    "Withdrawn",
    "WithdrawalMaker",
    "bundle_versions",
    "delivery_attempts",
    "message_index",
    "messages",
    "metadata",
    "migrations",
    "nullifications",
    "nullified_messages",
    "operator_actions",
    "outbox",
    "rejections",
    "replay_refusal",
    "sqlalchemy_url",
    "utc_now",
    "versions_not_kept",
]


class MessageStore(Nullifying, Claims, Queries, Upkeep):
    """The ``messages``, ``outbox``, ``delivery_attempts``, ``bundle_versions``, ``message_index``,
    ``operator_actions``, ``nullifications``, ``nullified_messages`` and ``rejections`` tables behind a small,
    thread-safe API.

    Safe to share between request and worker threads: each call checks a connection out of the engine's pool
    and commits before returning. :meth:`open` (also run by the first call) creates the schema in an empty
    database and checks its version otherwise; when the database is unreachable at start-up the store still
    constructs and every call retries (and raises :class:`StoreError` until it succeeds), so a database that
    comes up late does not need a restart.

    Times are the caller's clock (UTC): replicas sharing a database need synchronised clocks for leases.
    """
