"""The read side: one message, listings and counts for the CLI and the console, delivery histories, possible
redeliveries; and the rejections, kept and listed."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, insert, null, or_, select, union_all

from adaptor.itk.documents import DocumentKeys
from adaptor.itk.wire import INTERACTION_PREFIX, as_utc, interaction_name, utc_now
from adaptor.store.engine import StoreEngine
from adaptor.store.index import compact_upper, digits, fold_name
from adaptor.store.nullifying import matching_ids
from adaptor.store.records import (
    AttemptOutcome,
    BundleVersion,
    DeliveryAttempt,
    IndexEntry,
    MessageQuery,
    Nullified,
    OperatorAction,
    Redelivery,
    Rejection,
    Status,
    StoredMessage,
    StoredNullification,
    optional_utc,
    without_nul,
)
from adaptor.store.schema import (
    bundle_versions,
    delivery_attempts,
    message_index,
    messages,
    nullifications,
    operator_actions,
    outbox,
    rejections,
)
from adaptor.store.statements import (
    _NULLIFICATION_COLUMNS,
    _NULLIFIED_COLUMNS,
    _OUTBOX_COLUMNS,
    _SUMMARY_COLUMNS,
    _WITH_NULLIFIED,
    _WITH_OUTBOX,
)

#: How many digits an NHS number has.
NHS_NUMBER_DIGITS = 10
#: What a listing shows of the search index.
_INDEX_COLUMNS = [
    c for c in message_index.c if c.name not in ("record_id", "received_at") and not c.name.endswith("_key")
]
#: Messages with their delivery state, how their sender withdrew them (if so) and (when they have one) their
#: search index row.
_WITH_INDEX = _WITH_NULLIFIED.outerjoin(message_index, message_index.c.record_id == messages.c.id)
#: A search with conditions on the index (which a message without a row never meets) starts there: an inner join
#: to the delivery states, and to ``messages`` only for a condition on its columns (see :func:`_search_from`).
_INDEXED = message_index.join(outbox, outbox.c.record_id == message_index.c.record_id)
_INDEXED_WITH_MESSAGES = _INDEXED.join(messages, messages.c.id == message_index.c.record_id)


def _from_index(query: MessageQuery) -> bool:
    """Whether a search starts from the index: a condition on it, or a range of received times (the index has its
    own copy of them, in an index that also holds the record id, so the range is counted without reading
    ``messages``). Every message stored since schema version 4 has an index row; those a replica of an earlier
    release stored during a rolling upgrade have one once ``nhs111 db reindex`` ran."""
    return bool(_index_conditions(query, False)) or query.since is not None or query.until is not None


def _needs_messages(query: MessageQuery) -> bool:
    """Whether a search from the index needs ``messages`` for a condition (trackingid, interaction)."""
    return bool(query.tracking_id or (query.interaction and query.interaction.strip()))

#: Identifiers read from a refused request are cut to this length before they are kept (they are free text).
MAX_REJECTION_FIELD = 200


def _row_to_message(row: Any) -> StoredMessage:
    mapping = row._mapping
    updated_at = max(as_utc(mapping["updated_at"]), as_utc(mapping["outbox_updated_at"]))
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
        received_at=as_utc(mapping["received_at"]),
        status=Status(mapping["state"]),
        status_reason=mapping["last_error"],
        attempts=mapping["attempts"],
        next_attempt_at=as_utc(mapping["next_attempt_at"]),
        lease_owner=mapping["lease_owner"],
        lease_expires_at=optional_utc(mapping["lease_expires_at"]),
        delivered_at=optional_utc(mapping["delivered_at"]),
        replays=mapping["replays"],
        updated_at=updated_at,
        raw=mapping.get("raw"),
        bundle=mapping.get("bundle"),
        bundle_version=mapping["bundle_version"],
        converted_at=optional_utc(mapping["converted_at"]),
        document_id=mapping["document_id"],
        document_set_id=mapping["document_set_id"],
        document_version=mapping["document_version"],
        nullified=_nullified(mapping),
        index=_index_entry(mapping),
    )


def _nullification(mapping: Any) -> StoredNullification:
    """The ``n_*`` columns of a read (:data:`~adaptor.store.statements._NULLIFICATION_COLUMNS`, with the
    nullification message's ``n_message_id`` and ``n_received_at``)."""
    return StoredNullification(
        record_id=mapping["n_record_id"],
        message_id=mapping["n_message_id"],
        received_at=as_utc(mapping["n_received_at"]),
        effective_at=as_utc(mapping["n_effective_at"]),
        document_id=mapping["n_document_id"],
        withdraws_id=mapping["n_withdraws_id"],
        withdraws_set_id=mapping["n_withdraws_set_id"],
        withdraws_version=mapping["n_withdraws_version"],
        reason_code=mapping["n_reason_code"],
        reason_display=mapping["n_reason_display"],
        reason_text=mapping["n_reason_text"],
        author=mapping["n_author"],
    )


def _nullified(mapping: Any) -> Nullified | None:
    if mapping.get("n_record_id") is None:
        return None
    return Nullified(_nullification(mapping), as_utc(mapping["nullified_at"]), mapping["withdrawal_version"])


def _clip_field(value: str | None) -> str | None:
    if value is None:
        return None
    value = without_nul(value).strip()
    return value[:MAX_REJECTION_FIELD] or None


def _spellings(text: str) -> list[str]:
    return list(dict.fromkeys((text, text.upper(), text.lower())))


#: Above every character: ``key >= p AND key < p + _AFTER_ALL`` is "key begins with p" in a binary comparison.
_AFTER_ALL = "\U0010ffff"
#: ``search`` text treated as an ODS code or DoS id too: letters and digits, as long as those are at most.
_CODE = re.compile(r"^[A-Za-z0-9]{3,12}$")
_DX_CODE = re.compile(r"^dx\s*\d+$", re.IGNORECASE)


def _starts_with(column: ColumnElement[str], prefix: str, postgresql: bool) -> ColumnElement[bool]:
    """``column`` begins with ``prefix``, as an index range: on SQLite a range of the binary comparison, on
    PostgreSQL ``LIKE 'prefix%'``, which its ``text_pattern_ops`` index serves whatever the collation."""
    if postgresql:
        # The pattern is made here, a literal prefix with the wildcards escaped, so that the planner sees a
        # constant prefix (``column LIKE :p || '%'`` would hide it).
        escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
        return column.like(f"{escaped}%", escape="/")
    return and_(column >= prefix, column < prefix + _AFTER_ALL)


def _free_text(text: str, postgresql: bool) -> ColumnElement[bool]:
    """What the console's one search box matches (see :class:`MessageQuery`)."""
    number = digits(text)
    if number.isdigit() and len(number) == NHS_NUMBER_DIGITS:
        return message_index.c.nhs_number == number
    folded = text.lower()
    terms = [
        _starts_with(message_index.c.message_key, folded, postgresql),
        _starts_with(message_index.c.tracking_key, folded, postgresql),
        _starts_with(message_index.c.record_key, folded, postgresql),
    ]
    if _CODE.match(text):
        code = compact_upper(text)
        terms += [message_index.c.sender_ods == code, _recipient(code)]
    return or_(*terms)


def _recipient(code: str) -> ColumnElement[bool]:
    return message_index.c.recipients.contains(f" {compact_upper(code)} ", autoescape=True)


def _name(text: str, postgresql: bool) -> ColumnElement[bool]:
    """One word: the beginning of the family name. Two or more: the beginning of the first given name and of
    the family name, in either order (``Margaret Test``, ``Testwell Marg``)."""
    words = fold_name(text).split()
    family, given = message_index.c.family_key, message_index.c.given_key
    if len(words) == 1:
        return _starts_with(family, words[0], postgresql)
    first, last = words[0], words[-1]
    return or_(
        and_(_starts_with(family, last, postgresql), _starts_with(given, first, postgresql)),
        and_(_starts_with(family, first, postgresql), _starts_with(given, last, postgresql)),
    )


def _interaction(text: str) -> ColumnElement[bool]:
    name = interaction_name(text.strip()).lower()
    return func.lower(messages.c.interaction).in_([name, f"{INTERACTION_PREFIX}{name}"])


def _disposition(text: str) -> ColumnElement[bool]:
    if _DX_CODE.match(text.strip()):
        return message_index.c.disposition_code == compact_upper(text)
    return func.lower(message_index.c.disposition).contains(text.strip().lower(), autoescape=True)


def _message_conditions(
    query: MessageQuery, postgresql: bool = False, *, by_index: bool = False
) -> list[ColumnElement[bool]]:
    """The conditions of ``query``. ``by_index``: for a search that starts from the index (:data:`_INDEXED`),
    whose received times are its own copy of them."""
    conditions: list[ColumnElement[bool]] = []
    received_at = message_index.c.received_at if by_index else messages.c.received_at
    if query.statuses:
        conditions.append(outbox.c.state.in_([s.value for s in query.statuses]))
    if query.since is not None:
        conditions.append(received_at >= query.since)
    if query.until is not None:
        conditions.append(received_at < query.until)
    if query.tracking_id:
        conditions.append(messages.c.tracking_id.in_(_spellings(query.tracking_id.strip())))
    if query.interaction and query.interaction.strip():
        conditions.append(_interaction(query.interaction))
    conditions.extend(_index_conditions(query, postgresql))
    return conditions


def _index_conditions(query: MessageQuery, postgresql: bool) -> list[ColumnElement[bool]]:
    """The conditions on the search index (``message_index``) of :func:`_message_conditions`."""
    index = message_index.c
    conditions: list[ColumnElement[bool]] = []
    search = (query.search or "").strip()
    if search:
        conditions.append(_free_text(search, postgresql))
    if query.nhs_number and digits(query.nhs_number):
        conditions.append(index.nhs_number == digits(query.nhs_number))
    if query.name and fold_name(query.name):
        conditions.append(_name(query.name, postgresql))
    if query.birth_date and query.birth_date.strip():
        conditions.append(index.birth_date == query.birth_date.strip())
    if query.postcode and compact_upper(query.postcode):
        conditions.append(_starts_with(index.postcode, compact_upper(query.postcode), postgresql))
    if query.sender and compact_upper(query.sender):
        conditions.append(index.sender_ods == compact_upper(query.sender))
    if query.recipient and compact_upper(query.recipient):
        conditions.append(_recipient(query.recipient))
    if query.disposition and query.disposition.strip():
        conditions.append(_disposition(query.disposition))
    if query.with_warnings:
        conditions.append(index.warnings.is_not(None))
    if query.record_prefix and query.record_prefix.strip():
        conditions.append(_starts_with(index.record_key, query.record_prefix.strip().lower(), postgresql))
    return conditions


def _index_entry(mapping: Any) -> IndexEntry | None:
    if mapping.get("indexed") is None:
        return None
    warnings = mapping["warnings"]
    return IndexEntry(
        nhs_number=mapping["nhs_number"],
        patient_name=mapping["patient_name"],
        birth_date=mapping["birth_date"],
        postcode=mapping["postcode"],
        disposition_code=mapping["disposition_code"],
        disposition=mapping["disposition"],
        receiving_service=mapping["receiving_service"],
        effective_at=optional_utc(mapping["effective_at"]),
        warnings=tuple(json.loads(warnings)) if warnings else (),
        complete=mapping["indexed"] > 0,
    )


class Queries(StoreEngine):
    """Reads and rejections (see :class:`~adaptor.store.MessageStore`)."""

    # -- reads -----------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> StoredMessage | None:
        """The full record (with ``raw`` and ``bundle``), or ``None``."""
        query = (
            select(messages, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS, *_INDEX_COLUMNS)
            .select_from(_WITH_INDEX)
            .where(messages.c.id == record_id)
        )
        with self._reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else _row_to_message(row)

    def find_by_message_id(self, message_id: str) -> list[StoredMessage]:
        """Every record with this wsa:MessageID (MessageIDs are reused), oldest first, with content."""
        query = (
            select(messages, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS, *_INDEX_COLUMNS)
            .select_from(_WITH_INDEX)
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
        records ``where`` selects (its statuses win over ``statuses``). A message its sender withdrew carries
        :attr:`~StoredMessage.nullified` (the reason, who and when) in any state."""
        where = where or MessageQuery(statuses=statuses)
        columns = select(*_SUMMARY_COLUMNS, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS, *_INDEX_COLUMNS).select_from(
            _WITH_INDEX
        )
        newest_first = (messages.c.received_at.desc(), messages.c.id)
        if _from_index(where):
            # The page's record ids first, from the index alone, then only those rows: the documents of the
            # thousands of messages a name prefix may match are never read.
            page = (
                select(message_index.c.record_id)
                .select_from(self._search_from(where))
                .where(*self._conditions(where))
                .order_by(message_index.c.received_at.desc(), message_index.c.record_id)
                .limit(limit)
                .offset(offset)
            )
            query = columns.where(messages.c.id.in_(page.scalar_subquery())).order_by(*newest_first)
        else:
            query = columns.where(*self._conditions(where)).order_by(*newest_first).limit(limit).offset(offset)
        with self._reading() as conn:
            return [_row_to_message(row) for row in conn.execute(query)]

    def count_messages(self, where: MessageQuery | None = None) -> int:
        """How many records ``where`` selects (all of them by default)."""
        where = where or MessageQuery()
        query = select(func.count()).select_from(self._search_from(where)).where(*self._conditions(where))
        with self._reading() as conn:
            return int(conn.execute(query).scalar_one())

    def count_by_status_matching(self, where: MessageQuery) -> dict[Status, int]:
        """How many records in each state ``where`` selects, whatever its own states (what the console's state
        tabs show beside a search); every state present, zero included."""
        where = where.without_statuses()
        if where == MessageQuery():
            return self.count_by_status()
        query = (
            select(outbox.c.state, func.count())
            .select_from(self._search_from(where))
            .where(*self._conditions(where))
            .group_by(outbox.c.state)
        )
        with self._reading() as conn:
            counts = {Status(state): int(n) for state, n in conn.execute(query)}
        return {status: counts.get(status, 0) for status in Status}

    def _conditions(self, where: MessageQuery) -> list[ColumnElement[bool]]:
        return _message_conditions(where, self.is_postgresql, by_index=_from_index(where))

    @staticmethod
    def _search_from(where: MessageQuery) -> Any:
        """The tables a search needs: from the index when a condition is on it (and ``messages`` then only for
        a condition on its columns), else messages and their states."""
        if not _from_index(where):
            return _WITH_OUTBOX
        return _INDEXED_WITH_MESSAGES if _needs_messages(where) else _INDEXED

    def operator_actions(self, record_id: str) -> list[OperatorAction]:
        """What operators did to the record (its replays), oldest first."""
        query = (
            select(operator_actions)
            .where(operator_actions.c.message_record_id == record_id)
            .order_by(operator_actions.c.id)
        )
        with self._reading() as conn:
            return [
                OperatorAction(as_utc(row.at), row.operator, row.action, row.detail) for row in conn.execute(query)
            ]

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
                    started_at=as_utc(row.started_at),
                    finished_at=optional_utc(row.finished_at),
                    outcome=None if row.outcome is None else AttemptOutcome(row.outcome),
                    error=row.error,
                    bundle_version=row.bundle_version,
                )
                for row in conn.execute(query)
            ]

    def nullification(self, record_id: str) -> StoredNullification | None:
        """What the stored nullification ``record_id`` says (``None`` for any other record)."""
        query = (
            select(
                *_NULLIFICATION_COLUMNS,
                messages.c.message_id.label("n_message_id"),
                messages.c.received_at.label("n_received_at"),
            )
            .select_from(nullifications.join(messages, messages.c.id == nullifications.c.record_id))
            .where(nullifications.c.record_id == record_id)
        )
        with self._reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else _nullification(row._mapping)

    def withdrawn_by(self, nullification: StoredNullification) -> list[StoredMessage]:
        """The stored messages ``nullification`` names (by document id, else by setId and version, as when it
        arrived), oldest first, without content: each with :attr:`~StoredMessage.nullified` saying which
        nullification withdrew it (this one, or an earlier one for a repeated nullification)."""
        keys = DocumentKeys(nullification.withdraws_id, nullification.withdraws_set_id, nullification.withdraws_version)
        with self._reading() as conn:
            ids = matching_ids(conn, keys)
            if not ids:
                return []
            query = (
                select(*_SUMMARY_COLUMNS, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS)
                .select_from(_WITH_NULLIFIED)
                .where(messages.c.id.in_(ids))
                .order_by(messages.c.received_at, messages.c.id)
            )
            return [_row_to_message(row) for row in conn.execute(query)]

    def bundle_versions(self, record_id: str) -> list[BundleVersion]:
        """Every kept version of the record's Bundle, oldest first: those reconversions replaced, each as it was
        stored (and delivered), then the current one. Empty for a message without a Bundle or an unknown id.

        A version replaced before schema version 3 was not kept: it is missing from the list."""
        # One statement, so one snapshot: a reconversion committing meanwhile cannot show a version twice.
        kept = union_all(
            select(
                bundle_versions.c.version,
                bundle_versions.c.bundle,
                bundle_versions.c.converted_at,
                bundle_versions.c.superseded_at,
            ).where(bundle_versions.c.message_record_id == record_id),
            select(messages.c.bundle_version, messages.c.bundle, messages.c.converted_at, null()).where(
                messages.c.id == record_id, messages.c.bundle.is_not(None)
            ),
        ).subquery()
        query = select(kept).order_by(kept.c.version)
        with self._reading() as conn:
            return [
                BundleVersion(row.version, row.bundle, optional_utc(row.converted_at), optional_utc(row.superseded_at))
                for row in conn.execute(query)
            ]

    # -- rejections ------------------------------------------------------------------------------------------

    def record_rejection(self, rejection: Rejection) -> None:
        """Keep one refused request (see :class:`Rejection`). Raises :class:`StoreError`; callers on the
        request path must not let that change the answer (:func:`adaptor.http.facts.note_rejection`)."""
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
                    rejected_at=as_utc(row.rejected_at),
                )
                for row in conn.execute(query)
            ]

    def count_rejections(self) -> int:
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(rejections)).scalar_one())

    def possible_redeliveries(self) -> list[Redelivery]:
        """Delivered messages with interrupted or in-doubt attempts, oldest first.

        An interrupted attempt was started and never recorded: the process stopped somewhere between starting
        it and recording the result, possibly after the target had accepted the Bundle. An in-doubt attempt
        wrote the Bundle to the target and lost the connection (or timed out) before the target answered. Each
        is therefore at most one extra copy at the target, carrying the same MessageID (``messageId``
        property), which consumers use to drop it. This is an upper bound: a process stopped before sending
        counts too, and so does a transfer the target never received.
        """
        outcome = delivery_attempts.c.outcome
        interrupted = func.sum(case((outcome == AttemptOutcome.INTERRUPTED.value, 1), else_=0))
        in_doubt = func.sum(case((outcome == AttemptOutcome.IN_DOUBT.value, 1), else_=0))
        query = (
            select(messages.c.id, messages.c.message_id, interrupted, in_doubt)
            .select_from(_WITH_OUTBOX.join(delivery_attempts, delivery_attempts.c.message_record_id == messages.c.id))
            .where(
                outbox.c.state == Status.DELIVERED.value,
                outcome.in_((AttemptOutcome.INTERRUPTED.value, AttemptOutcome.IN_DOUBT.value)),
            )
            .group_by(messages.c.id, messages.c.message_id, messages.c.received_at)
            .order_by(messages.c.received_at, messages.c.id)
        )
        with self._reading() as conn:
            rows = conn.execute(query)
            return [Redelivery(record_id, message_id, int(n), int(d)) for record_id, message_id, n, d in rows]
