"""The request path: storing an accepted message, finding an identical resend, and giving a held message back to
the workers when its sender resends it."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.exc import IntegrityError

from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import utc_now
from adaptor.store.engine import StoreEngine
from adaptor.store.records import Status, StoreError
from adaptor.store.schema import outbox
from adaptor.store.statements import _FIND_IDENTITY, _INSERT_MESSAGE, _INSERT_OUTBOX, _queue_values


class Accepting(StoreEngine):
    """Storing what the request path accepts (see :class:`~adaptor.store.MessageStore`)."""

    def accept(
        self, message: ItkMessage, raw: bytes, *, claim_for: str | None = None, lease_seconds: float = 0
    ) -> tuple[str, bool]:
        """Record ``message`` (and the request bytes ``raw``) in one transaction, committed on return.

        The message is queued (``pending``) for the outbox workers; with ``claim_for`` it is instead stored
        already claimed by that synchronous request for ``lease_seconds`` (sync mode), so no worker takes it.

        Returns ``(record_id, is_new)``. An identical resend (same MessageID, trackingid and digest) returns the
        existing record's id and ``False`` and writes nothing (see
        :meth:`~adaptor.store.claims.Claims.claim_for_sender` and
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
            **_queue_values(now),
            "last_error": None,
            "delivered_at": None,
            "replays": 0,
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
