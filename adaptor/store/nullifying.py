"""Storing a nullification (nullification.md §2): the sender withdraws a document it sent in error.

In one transaction with the nullification itself, every stored message of the document it names (found by the
document's ``id``; failing that, by its ``setId`` and ``versionNumber``; resends and copies included) is
withdrawn, each according to what has left the adaptor of it:

* nothing (never delivered, no attempt that may have reached the target): it becomes :attr:`Status.NULLIFIED` and
  is never delivered. A worker that claimed it and has not started sending finds its claim gone and sends nothing.
* it was delivered, or an attempt may have reached the target (in doubt, interrupted, or in progress): its
  *withdrawal*, made from its current Bundle by the caller's ``withdrawal`` function, becomes its next Bundle
  version (the one it replaces is kept, as a reconversion keeps it) and it is queued again, so that the outbox
  delivers the withdrawal through the same target, with the same properties, as any Bundle; once delivered it is
  :attr:`Status.NULLIFIED`. A send in progress is left to finish: the withdrawal is due when that send's lease
  ends, so that it follows the message rather than overtaking it.
* a nullification withdrew it already: nothing changes (a repeated nullification sends nothing more).

The nullification is :attr:`Status.NULLIFICATION` when it named a stored message, :attr:`Status.UNMATCHED`
otherwise (:mod:`adaptor.store.accepting` withdraws a message arriving later, on arrival). Because it all
commits together, a crash leaves either nothing of the nullification or the withdrawals queued in the outbox,
which delivers each once it runs again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError

from adaptor.itk.documents import DocumentKeys, Nullification
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import as_utc, utc_now
from adaptor.store.accepting import Accepting
from adaptor.store.records import (
    AttemptOutcome,
    Effect,
    NullificationStored,
    Original,
    Status,
    StoreError,
    Withdrawn,
)
from adaptor.store.schema import delivery_attempts, messages, nullified_messages, outbox
from adaptor.store.statements import (
    _INSERT_MESSAGE,
    _INSERT_NULLIFICATION,
    _INSERT_NULLIFIED,
    _INSERT_OUTBOX,
    _KEEP_SUPERSEDED,
    _MARK_MATCHED,
    _WITH_OUTBOX,
    _queue_values,
)

log = logging.getLogger("adaptor.store")  # pinned: the JSON log format names it

#: Makes the withdrawal Bundle (text) of a stored message (:func:`adaptor.delivery.withdrawal.withdrawal_text`).
WithdrawalMaker = Callable[[Original], str]

#: An attempt that may have handed the Bundle to the target: delivered, in doubt, interrupted, or not finished.
_MAY_HAVE_REACHED = exists().where(
    delivery_attempts.c.message_record_id == messages.c.id,
    or_(
        delivery_attempts.c.finished_at.is_(None),
        delivery_attempts.c.outcome.in_(
            [AttemptOutcome.DELIVERED.value, AttemptOutcome.IN_DOUBT.value, AttemptOutcome.INTERRUPTED.value]
        ),
    ),
)
_ALREADY_NULLIFIED = exists().where(nullified_messages.c.record_id == messages.c.id)


def matching_condition(keys: DocumentKeys, *, by_id: bool) -> Any:
    """The stored messages of a document: by its id, or (``by_id`` false) by its setId and version."""
    if by_id:
        return messages.c.document_id == keys.document_id
    return (messages.c.document_set_id == keys.set_id) & (messages.c.document_version == keys.version)


def matching_ids(conn: Connection, keys: DocumentKeys) -> list[str]:
    """The stored messages a nullification of ``keys`` names (nullification.md §2.2): those with its document id,
    or, when there are none, those with its setId and versionNumber. Oldest first."""
    for by_id, usable in (
        (True, keys.document_id is not None),
        (False, keys.set_id is not None and keys.version is not None),
    ):
        if not usable:
            continue
        query = (
            select(messages.c.id)
            .where(matching_condition(keys, by_id=by_id))
            .order_by(messages.c.received_at, messages.c.id)
        )
        found = list(conn.execute(query).scalars())
        if found:
            return found
    return []


class Nullifying(Accepting):
    """Storing nullifications (see :class:`~adaptor.store.MessageStore` and this module)."""

    def accept_nullification(
        self,
        message: ItkMessage,
        raw: bytes,
        nullification: Nullification,
        *,
        withdrawal: WithdrawalMaker,
        record_id: str | None = None,
    ) -> NullificationStored:
        """Store the nullification ``message`` (request bytes ``raw``, its document read as ``nullification``) and
        withdraw the stored messages it names, in one transaction (see the module docstring); ``withdrawal``
        makes the withdrawal Bundle of a message that needs one, inside that transaction.

        An identical resend finds the stored nullification and changes nothing (``is_new`` false). Raises
        :class:`StoreError`, and whatever ``withdrawal`` raises (then nothing is stored).
        """
        record_id = record_id or str(uuid.uuid4())
        now = utc_now()
        no_bundle = {"bundle": None, "bundle_version": None, "converted_at": None}
        message_row = self._message_row(message, raw, record_id, now, no_bundle, None)
        outbox_row = self._outbox_row(record_id, now, {"state": Status.UNMATCHED.value})
        try:
            with self._transaction() as conn:
                self._lock_document(conn, nullification.withdraws)
                conn.execute(_INSERT_MESSAGE, message_row)
                conn.execute(_INSERT_OUTBOX, outbox_row)
                conn.execute(_INSERT_NULLIFICATION, _nullification_row(record_id, nullification))
                originals = self._originals(conn, nullification.withdraws)
                withdrawn = tuple(self._withdraw(conn, row, record_id, now, withdrawal) for row in originals)
                if withdrawn:
                    conn.execute(_MARK_MATCHED, {"b_record_id": record_id, "b_now": now})
            return NullificationStored(record_id, True, withdrawn)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
        existing = self._find_identity(message.message_id, message.tracking_id, message.digest)
        if existing is None:
            raise StoreError("message store rejected the new record")
        return NullificationStored(existing, False)

    def _originals(self, conn: Connection, keys: DocumentKeys) -> Sequence[Row[Any]]:
        """The stored messages ``keys`` names, with what deciding their withdrawal needs; on PostgreSQL their
        outbox rows locked first, so that no worker claims or releases one while this transaction decides."""
        ids = matching_ids(conn, keys)
        if not ids:
            return []
        if self.is_postgresql:
            lock = select(outbox.c.record_id).where(outbox.c.record_id.in_(ids)).order_by(outbox.c.record_id)
            conn.execute(lock.with_for_update())
        query = (
            select(
                messages.c.id,
                messages.c.message_id,
                messages.c.bundle,
                messages.c.bundle_version,
                outbox.c.state,
                outbox.c.lease_expires_at,
                _ALREADY_NULLIFIED.label("nullified"),
                _MAY_HAVE_REACHED.label("may_have_reached"),
            )
            .select_from(_WITH_OUTBOX)
            .where(messages.c.id.in_(ids))
            .order_by(messages.c.received_at, messages.c.id)
        )
        return conn.execute(query).all()

    @staticmethod
    def _withdraw(
        conn: Connection, row: Row[Any], nullification_id: str, now: datetime, withdrawal: WithdrawalMaker
    ) -> Withdrawn:
        if row.nullified:
            return Withdrawn(row.id, row.message_id, Effect.ALREADY_NULLIFIED)
        link = {"record_id": row.id, "nullification_id": nullification_id, "nullified_at": now}
        sent = row.state == Status.DELIVERED.value or bool(row.may_have_reached)
        if sent and row.bundle is None:
            # Cannot happen for what this adaptor stores (an attempt sends a kept Bundle); said loudly if it does.
            log.error(
                "message withdrawn may have been sent, but no Bundle was kept to withdraw it",
                extra={"record_id": row.id},
            )
        if not sent or row.bundle is None:
            conn.execute(
                update(outbox)
                .where(outbox.c.record_id == row.id)
                .values(
                    state=Status.NULLIFIED.value, lease_owner=None, lease_expires_at=None, synchronous=0, updated_at=now
                )
            )
            conn.execute(_INSERT_NULLIFIED, {**link, "withdrawal_version": None})
            return Withdrawn(row.id, row.message_id, Effect.NEVER_DELIVERED)

        text = withdrawal(Original(row.id, row.message_id, row.bundle))
        version = (row.bundle_version or 1) + 1
        conn.execute(_KEEP_SUPERSEDED, {"b_record_id": row.id, "b_now": now})
        conn.execute(
            update(messages)
            .where(messages.c.id == row.id)
            .values(bundle=text, bundle_version=version, converted_at=now, updated_at=now)
        )
        lease_end = as_utc(row.lease_expires_at) if row.lease_expires_at is not None else None
        in_flight = row.state == Status.DELIVERING.value and lease_end is not None and lease_end > now
        queued = {**_queue_values(now), "next_attempt_at": lease_end if in_flight else now, "last_error": None}
        conn.execute(update(outbox).where(outbox.c.record_id == row.id).values(**queued))
        conn.execute(_INSERT_NULLIFIED, {**link, "withdrawal_version": version})
        return Withdrawn(row.id, row.message_id, Effect.WITHDRAWAL_QUEUED, version)


def _nullification_row(record_id: str, nullification: Nullification) -> dict[str, Any]:
    withdraws = nullification.withdraws
    return {
        "record_id": record_id,
        "document_id": nullification.document.document_id,
        "withdraws_id": withdraws.document_id,
        "withdraws_set_id": withdraws.set_id,
        "withdraws_version": withdraws.version,
        "reason_code": nullification.reason_code,
        "reason_display": nullification.reason_display,
        "reason_text": nullification.reason_text,
        "author": nullification.author,
        "effective_at": nullification.effective_at,
    }
