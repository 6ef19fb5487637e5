"""The read side: one message, listings and counts for the CLI and the console, delivery histories, possible
redeliveries; and the rejections, kept and listed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, func, insert, null, or_, select, union_all

from adaptor.itk.documents import DocumentKeys
from adaptor.itk.wire import ODS_IDENTITY_PREFIX, as_utc, utc_now
from adaptor.store.engine import StoreEngine
from adaptor.store.nullifying import matching_ids
from adaptor.store.records import (
    AttemptOutcome,
    BundleVersion,
    DeliveryAttempt,
    MessageQuery,
    Nullified,
    Redelivery,
    Rejection,
    Status,
    StoredMessage,
    StoredNullification,
    optional_utc,
    without_nul,
)
from adaptor.store.schema import bundle_versions, delivery_attempts, messages, nullifications, outbox, rejections
from adaptor.store.statements import (
    _NULLIFICATION_COLUMNS,
    _NULLIFIED_COLUMNS,
    _OUTBOX_COLUMNS,
    _SUMMARY_COLUMNS,
    _WITH_NULLIFIED,
    _WITH_OUTBOX,
)

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
                func.lower(messages.c.sender) == f"{ODS_IDENTITY_PREFIX}{search.lower()}",
                func.lower(messages.c.sender).startswith(f"{ODS_IDENTITY_PREFIX}{search.lower()}:", autoescape=True),
            )
        )
    return conditions


class Queries(StoreEngine):
    """Reads and rejections (see :class:`~adaptor.store.MessageStore`)."""

    # -- reads -----------------------------------------------------------------------------------------------

    def get(self, record_id: str) -> StoredMessage | None:
        """The full record (with ``raw`` and ``bundle``), or ``None``."""
        query = (
            select(messages, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS)
            .select_from(_WITH_NULLIFIED)
            .where(messages.c.id == record_id)
        )
        with self._reading() as conn:
            row = conn.execute(query).first()
        return None if row is None else _row_to_message(row)

    def find_by_message_id(self, message_id: str) -> list[StoredMessage]:
        """Every record with this wsa:MessageID (MessageIDs are reused), oldest first, with content."""
        query = (
            select(messages, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS)
            .select_from(_WITH_NULLIFIED)
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
        query = (
            select(*_SUMMARY_COLUMNS, *_OUTBOX_COLUMNS, *_NULLIFIED_COLUMNS)
            .select_from(_WITH_NULLIFIED)
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
