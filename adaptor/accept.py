"""The accept pipeline for a validated message: store it durably; deliver it now (sync) or from the outbox (async).

Independent of SOAP and HTTP: :mod:`adaptor.http.soap` calls :meth:`ReceiverService.accept` once a request passed
validation and answers ``OK`` when it returns; an :class:`~adaptor.itk.faults.ItkFault` it raises is the answer
instead.

``PEM111_DELIVERY_MODE=async`` (default)
    ``OK`` once the message is committed to the store: one short transaction on the request path. The outbox
    workers (:mod:`adaptor.delivery.outbox`) convert and deliver it, retrying while the target is down; the service only
    wakes them. Only a store failure is a fault (2100, the sender retries).
``PEM111_DELIVERY_MODE=sync``
    The reference's behaviour: ``OK`` only after the target accepted the Bundle. The message is stored already
    claimed by the request, converted and delivered in the request thread. A delivery failure answers 2100 and
    *holds* the message: no worker delivers it behind the sender's back; the sender's resend (same MessageID,
    trackingid and content) is tried again, synchronously. A message that cannot be delivered at all (conversion
    failure, permanent refusal) is dead-lettered and answered 2200.

An identical resend of a stored message is never stored twice. In async mode it is answered ``OK`` (a message
held by an earlier sync failure goes back to the workers); in sync mode it is ``OK`` at once when the message
was delivered, and otherwise delivered now.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from adaptor.config import Settings
from adaptor.delivery.forwarders import Forwarder
from adaptor.delivery.outbox import Deliverer, process_owner_prefix
from adaptor.itk import faults
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import new_upper_uuid
from adaptor.ops.metrics import Metrics
from adaptor.store import Claim, MessageStore, Status, StoreError

log = logging.getLogger("adaptor.service")  # pinned: the JSON log format names it


class ReceiverService:
    """Accepts validated ITK messages. Thread-safe: share one instance between request threads.

    ``wake`` is called after a message is queued for the outbox (the in-process workers'
    :meth:`~adaptor.delivery.outbox.OutboxWorker.wake`); without it the workers find the message at their next poll.
    ``metrics`` counts accepted messages and resends (and, in sync mode, the deliveries made here); without it
    they are counted in a :class:`~adaptor.ops.metrics.Metrics` nobody reads.
    """

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        forwarder: Forwarder,
        *,
        wake: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.forwarder = forwarder
        self.synchronous = settings.delivery_mode == "sync"
        self.metrics = metrics or Metrics()
        self._deliverer = Deliverer(settings, store, forwarder, metrics=self.metrics)
        self._wake = wake or (lambda: None)
        self._owner_prefix = process_owner_prefix()

    def accept(self, message: ItkMessage, raw: bytes) -> None:
        """Store ``message`` (``raw`` = the request bytes), and in sync mode deliver it, before returning.

        Raises a 2100 :class:`~adaptor.itk.faults.ItkFault` when the message could not be stored (or, in sync mode,
        delivered yet) and a 2200 one when, in sync mode, it can never be delivered as it is.
        """
        if self.synchronous:
            self._accept_sync(message, raw)
        else:
            self._accept_async(message, raw)

    # -- async -----------------------------------------------------------------------------------------------

    def _accept_async(self, message: ItkMessage, raw: bytes) -> None:
        try:
            record_id, is_new = self.store.accept(message, raw)
        except StoreError as exc:
            self._store_failed(message, exc)
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc
        if is_new:
            self.metrics.message_accepted()
            log.info("message accepted", extra={**_fields(message, record_id), "delivery": "queued"})
            self._wake()
            return
        # Already stored, so the answer is OK whatever happens next; only a message held for this resend by a
        # failed synchronous delivery (the mode was switched since) needs handing to the workers.
        self.metrics.resend_received()
        try:
            requeued = self.store.requeue_held(record_id)
        except StoreError as exc:
            log.error(
                "resend: could not check for a held delivery", extra={"record_id": record_id, "error": str(exc)}
            )
            requeued = False
        log.info(
            "resend received",
            extra={
                **_fields(message, record_id),
                "delivery": "held delivery queued again" if requeued else "already stored, not delivered again",
            },
        )
        if requeued:
            self._wake()

    # -- sync ------------------------------------------------------------------------------------------------

    def _accept_sync(self, message: ItkMessage, raw: bytes) -> None:
        owner = f"{self._owner_prefix}/sync-{threading.get_ident()}"
        lease = self.settings.delivery_lease_seconds
        try:
            record_id, is_new = self.store.accept(message, raw, claim_for=owner, lease_seconds=lease)
            if is_new:
                claim: Claim | Status = Claim.for_new_message(record_id, message, raw, owner)
            else:
                claim = self.store.claim_for_sender(record_id, owner, lease)
        except StoreError as exc:
            self._store_failed(message, exc)
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc

        if is_new:
            self.metrics.message_accepted()
        else:
            self.metrics.resend_received()
        if claim is Status.DELIVERED:
            log.info("resend received", extra={**_fields(message, record_id), "delivery": "already delivered"})
            return
        if isinstance(claim, Status):
            # Another request (a concurrent copy of this resend) is delivering it right now.
            log.info(
                "resend received",
                extra={**_fields(message, record_id), "delivery": "being delivered by another request"},
            )
            raise faults.retryable("The message is being delivered", relates_to=message.message_id)
        log.info(
            "message accepted" if is_new else "resend received",
            extra={**_fields(message, record_id), "delivery": "delivering now"},
        )

        try:
            outcome = self._deliverer.deliver(claim)
        except StoreError as exc:
            # Nothing was sent; the message stays claimed until its lease expires, then held for the resend.
            log.error("store failed before delivery", extra={"record_id": record_id, "error": str(exc)})
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc
        if outcome.status is Status.DELIVERED:
            return  # even if recording it failed: the target has it, which is what OK means here
        if outcome.status is Status.DEAD_LETTER:
            # Retrying cannot help; the cause is on the record and, under this error id, in the log.
            error_id = outcome.error_id or new_upper_uuid()
            log.error(
                "dead-lettered message answered 2200",
                extra={"record_id": record_id, "message_id": message.message_id, "error_id": error_id},
            )
            raise faults.internal(error_id, relates_to=message.message_id)
        raise faults.retryable("The message could not be delivered", relates_to=message.message_id)


    @staticmethod
    def _store_failed(message: ItkMessage, exc: StoreError) -> None:
        # The StoreError's text names the database problem, never the statement's values.
        log.error(
            "message not stored",
            extra={"message_id": message.message_id, "tracking_id": message.tracking_id, "error": str(exc)},
        )


def _fields(message: ItkMessage, record_id: str) -> dict[str, object]:
    """The log fields (:mod:`adaptor.ops.logs`) that identify a stored message: identifiers, never content."""
    return {
        "record_id": record_id,
        "message_id": message.message_id,
        "tracking_id": message.tracking_id,
        "interaction": message.interaction,
        "ods_code": ",".join(message.ods_codes) or None,
    }
