"""The request path: storing an accepted message with its Bundle (or a rejected one with the reason), finding an
identical resend, and giving a held or rejected message back to the workers when its sender resends it.

A message arriving after the nullification that withdraws it (nullification.md §2.4) is stored as
:attr:`Status.NULLIFIED`, never delivered, in the same transaction that finds the nullification; the storing of
nullifications themselves is :mod:`adaptor.store.nullifying`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from adaptor.itk.documents import DocumentKeys
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import utc_now
from adaptor.store.engine import StoreEngine
from adaptor.store.index import BUNDLE_COLUMNS, envelope_facts, index_row
from adaptor.store.records import Accepted, Status, StoreError, without_nul
from adaptor.store.schema import messages, outbox
from adaptor.store.statements import (
    _FIND_IDENTITY,
    _FIND_NULLIFICATIONS,
    _INSERT_INDEX,
    _INSERT_MESSAGE,
    _INSERT_NULLIFIED,
    _INSERT_OUTBOX,
    _LOCK_DOCUMENT,
    _MARK_MATCHED,
    _SET_INDEX_FACTS,
    _STATE_OF,
    _queue_values,
    document_lock_key,
)

#: A message stored under the nullification that withdrew it before it arrived: nothing to deliver, ever.
_NULLIFIED_ON_ARRIVAL = {
    "state": Status.NULLIFIED.value,
    "attempts": 0,
    "lease_owner": None,
    "lease_expires_at": None,
    "synchronous": 0,
}


def update_index_facts(conn: Connection, record_id: str, facts: Mapping[str, Any]) -> None:
    """A message's new Bundle (a reconversion, or a rejected message's resend that converts now): its index row
    takes the Bundle's ``facts``; its identifiers and warnings stay."""
    conn.execute(_SET_INDEX_FACTS, {"b_record_id": record_id, **{f"b_{c}": facts.get(c) for c in BUNDLE_COLUMNS}})


class Accepting(StoreEngine):
    """Storing what the request path accepts (see :class:`~adaptor.store.MessageStore`)."""

    def accept(self, message: ItkMessage, raw: bytes, bundle: str | None = None, **options: Any) -> tuple[str, bool]:
        """:meth:`accept_message` (the same arguments), returning ``(record_id, is_new)``."""
        accepted = self.accept_message(message, raw, bundle, **options)
        return accepted.record_id, accepted.is_new

    def accept_message(
        self,
        message: ItkMessage,
        raw: bytes,
        bundle: str | None = None,
        *,
        converted_at: datetime | None = None,
        record_id: str | None = None,
        claim_for: str | None = None,
        lease_seconds: float = 0,
        document: DocumentKeys | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> Accepted:
        """Record ``message``, the request bytes ``raw`` and the ``bundle`` converted from them at
        ``converted_at`` (default: now) as version 1, in one transaction, committed on return. (The request path
        always passes a Bundle; without one the message is stored as an adaptor before schema version 2 stored
        it, and its first delivery attempt converts it.) Its search index row is written in the same
        transaction: the envelope's identifiers, the Bundle's ``facts``
        (:func:`adaptor.store.index.bundle_facts`) and the message's warnings.

        ``record_id`` is the id to give it (the one its Bundle's ids were drawn from; a new one by default). The
        message is queued (``pending``) for the outbox workers; with ``claim_for`` it is instead stored already
        claimed by that synchronous request for ``lease_seconds`` (sync mode), so no worker takes it.

        ``document`` identifies the document the Bundle is mapped from: kept so that a nullification finds the
        message, and looked up among the nullifications already stored. One found means the sender withdrew the
        message before it arrived: it is stored :attr:`Status.NULLIFIED` instead (never claimed, never delivered)
        and :attr:`Accepted.nullified_by` names the nullification, which is no longer unmatched.

        An identical resend (same MessageID, trackingid and digest) returns the existing record's id with
        ``is_new`` ``False`` and writes nothing (see :meth:`state_of`,
        :meth:`~adaptor.store.claims.Claims.claim_for_sender`, :meth:`requeue_held` and :meth:`adopt_bundle` for
        what a resend may do to it).
        """
        now = utc_now()
        outbox_row: dict[str, Any] = {}
        if claim_for is not None:
            outbox_row.update(
                state=Status.DELIVERING.value,
                attempts=1,
                lease_owner=claim_for,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                synchronous=1,
            )
        bundle_values: dict[str, Any] = {"bundle": None, "bundle_version": None, "converted_at": None}
        if bundle is not None:
            bundle_values = {"bundle": bundle, "bundle_version": 1, "converted_at": converted_at or now}
        return self._insert(message, raw, record_id, now, bundle_values, outbox_row, document, facts)

    def reject(
        self,
        message: ItkMessage,
        raw: bytes,
        reason: str,
        *,
        record_id: str | None = None,
        document: DocumentKeys | None = None,
    ) -> tuple[str, bool]:
        """Record ``message`` as rejected (:attr:`Status.REJECTED`): it passed validation, could not be converted,
        and its sender is told so. Kept with ``raw`` and ``reason`` for operators, and never delivered on its own
        (nor at all once a nullification withdraws it: ``document`` as for :meth:`accept_message`).

        Returns ``(record_id, is_new)`` as :meth:`accept` does: an identical resend finds the stored record,
        whatever its state, and writes nothing.
        """
        outbox_row = {"state": Status.REJECTED.value, "last_error": without_nul(reason)}
        no_bundle = {"bundle": None, "bundle_version": None, "converted_at": None}
        accepted = self._insert(message, raw, record_id, utc_now(), no_bundle, outbox_row, document, None)
        return accepted.record_id, accepted.is_new

    def _insert(
        self,
        message: ItkMessage,
        raw: bytes,
        record_id: str | None,
        now: datetime,
        bundle_values: dict[str, Any],
        outbox_values: dict[str, Any],
        document: DocumentKeys | None,
        facts: Mapping[str, Any] | None,
    ) -> Accepted:
        record_id = record_id or str(uuid.uuid4())
        message_row = self._message_row(message, raw, record_id, now, bundle_values, document)
        outbox_row = self._outbox_row(record_id, now, outbox_values)
        nullified_by = None
        try:
            # Insert first: new messages are the common case, and the unique constraint (not a prior SELECT)
            # decides a race between two copies of the same resend arriving at once.
            with self._transaction() as conn:
                if document is not None and document.any:
                    self._lock_document(conn, document)
                # Statement and values apart: the compiled INSERT is cached, the values are only bound.
                conn.execute(_INSERT_MESSAGE, message_row)
                nullified_by = self._withdrawn_before(conn, document, now) if document else None
                if nullified_by is not None:
                    outbox_row.update(_NULLIFIED_ON_ARRIVAL)
                conn.execute(_INSERT_OUTBOX, outbox_row)
                if nullified_by is not None:
                    values = {"record_id": record_id, "nullification_id": nullified_by, "nullified_at": now}
                    conn.execute(_INSERT_NULLIFIED, {**values, "withdrawal_version": None})
                envelope = envelope_facts(
                    record_id=record_id,
                    message_id=message.message_id,
                    tracking_id=message.tracking_id,
                    sender=message.sender,
                    ods_codes=message.ods_codes,
                    dos_ids=message.dos_ids,
                )
                conn.execute(_INSERT_INDEX, index_row(envelope, now, facts, message.warnings))
            return Accepted(record_id, True, nullified_by)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        existing = self._find_identity(message.message_id, message.tracking_id, message.digest)
        if existing is None:  # the IntegrityError was not the identity constraint after all
            raise StoreError("message store rejected the new record")
        return Accepted(existing, False)

    def _lock_document(self, conn: Connection, document: DocumentKeys) -> None:
        """PostgreSQL: serialise with any transaction storing a message or nullification of this document."""
        if self.is_postgresql:
            for key in document.lock_keys():
                conn.execute(_LOCK_DOCUMENT, {"b_lock_key": document_lock_key(key)})

    @staticmethod
    def _withdrawn_before(conn: Connection, document: DocumentKeys, now: datetime) -> str | None:
        """The nullification that withdrew ``document`` before it arrived (the first, when several did); each of
        them still unmatched is matched now. ``None`` when there is none."""
        if not document.any:
            return None
        params = {"b_document_id": document.document_id, "b_set_id": document.set_id, "b_version": document.version}
        found = list(conn.execute(_FIND_NULLIFICATIONS, params).scalars())
        for nullification_id in found:
            conn.execute(_MARK_MATCHED, {"b_record_id": nullification_id, "b_now": now})
        return found[0] if found else None

    @staticmethod
    def _message_row(
        message: ItkMessage,
        raw: bytes,
        record_id: str,
        now: datetime,
        bundle_values: dict[str, Any],
        document: DocumentKeys | None,
    ) -> dict[str, Any]:
        document = document or DocumentKeys()
        return {
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
            **bundle_values,
            "updated_at": now,
            "document_id": document.document_id,
            "document_set_id": document.set_id,
            "document_version": document.version,
        }

    @staticmethod
    def _outbox_row(record_id: str, now: datetime, outbox_values: dict[str, Any]) -> dict[str, Any]:
        return {
            "record_id": record_id,
            **_queue_values(now),
            "last_error": None,
            "delivered_at": None,
            "replays": 0,
            **outbox_values,
        }

    def state_of(self, record_id: str) -> Status:
        """The delivery state of a stored record (a resend's). Raises :class:`StoreError` for an unknown id."""
        with self._reading() as conn:
            state = conn.execute(_STATE_OF, {"b_record_id": record_id}).scalar_one_or_none()
        if state is None:
            raise StoreError(f"no stored message with id {record_id}")
        return Status(state)

    def adopt_bundle(
        self,
        record_id: str,
        bundle: str,
        converted_at: datetime,
        *,
        for_sender: bool = False,
        facts: Mapping[str, Any] | None = None,
    ) -> bool:
        """A resend of a rejected message that converts now (the mapping was fixed since): keep ``bundle``, made
        at ``converted_at``, as its version 1 and queue it: ``pending`` for the workers, or ``held`` for the
        synchronous sender to claim (``for_sender``, sync mode); its index row takes the Bundle's ``facts``.
        Returns whether it did (``False``: it is no longer rejected)."""
        now = utc_now()
        queue = _queue_values(now)
        if for_sender:
            queue["state"] = Status.HELD.value
        with self._transaction() as conn:
            queued = conn.execute(
                update(outbox)
                .where(outbox.c.record_id == record_id, outbox.c.state == Status.REJECTED.value)
                .values(**queue, last_error=None)
            )
            if queued.rowcount != 1:
                return False
            conn.execute(
                update(messages)
                .where(messages.c.id == record_id)
                .values(bundle=bundle, bundle_version=1, converted_at=converted_at, updated_at=now)
            )
            if facts is not None:
                update_index_facts(conn, record_id, facts)
        return True

    def _find_identity(self, message_id: str, tracking_id: str, digest: str) -> str | None:
        params = {"b_message_id": message_id, "b_tracking_id": tracking_id, "b_digest": digest}
        with self._reading() as conn:
            return conn.execute(_FIND_IDENTITY, params).scalar_one_or_none()

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
                update(outbox).where(outbox.c.record_id == record_id, held).values(**_queue_values(now))
            )
        return result.rowcount == 1
