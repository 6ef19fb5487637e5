"""The accept pipeline for a validated message: convert it, store it with its Bundle, and deliver it now (sync) or
from the outbox (async).

Independent of SOAP and HTTP: :mod:`adaptor.http.soap` calls :meth:`ReceiverService.accept` once a request passed
validation and answers ``OK`` when it returns; an :class:`~adaptor.itk.faults.ItkFault` it raises is the answer
instead.

Every message is converted here, in the request, before it is stored: ``OK`` means the message is stored together
with the FHIR Bundle that every delivery of it sends (one transaction). A message that cannot be converted is
answered 2200 (rule E3, the diagnostic naming the element that failed) and stored as ``rejected``, with the
request and the reason, for operators; it is never delivered on its own.

``PEM111_DELIVERY_MODE=async`` (default)
    ``OK`` once the message and its Bundle are committed to the store: one short transaction after the
    conversion. The outbox workers (:mod:`adaptor.delivery.outbox`) deliver the stored Bundle, retrying while the
    target is down; the service only wakes them. A store failure is a fault (2100, the sender retries).
``PEM111_DELIVERY_MODE=sync``
    The reference's behaviour: ``OK`` only after the target accepted the Bundle. The message is stored already
    claimed by the request and delivered in the request thread. A delivery failure answers 2100 and *holds* the
    message: no worker delivers it behind the sender's back; the sender's resend (same MessageID, trackingid and
    content) is tried again, synchronously. A message the target refuses for good is dead-lettered and answered
    2200; one that cannot be converted is rejected and answered 2200 (E3), as in async mode.

A *nullification* (nullification.md: the sender withdraws a document it sent in error) is answered ``OK`` once it
is stored, in either mode: it is stored with its effect on the stored messages it names, in one transaction
(:mod:`adaptor.store.nullifying`), and the withdrawals it queues are the outbox workers' to deliver. A
nullification that does not say which document it withdraws cannot be processed: rule E3, kept as ``rejected``.
A message arriving after the nullification that withdraws it is stored ``nullified``, answered ``OK``, and never
delivered.

An identical resend of a stored message is never stored twice. In async mode it is answered ``OK`` (a message
held by an earlier sync failure goes back to the workers); in sync mode it is ``OK`` at once when the message
was delivered, and otherwise delivered now. A resend of a *rejected* message is converted again (the mapping may
have been fixed since): still unconvertible, it gets the same fault; convertible now, it is accepted as if new,
under its stored record.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from adaptor.config import Settings
from adaptor.delivery.conversion import ConversionError, bundle_text, convert_message
from adaptor.delivery.forwarders import Forwarder
from adaptor.delivery.outbox import MAX_ERROR, Deliverer, process_owner_prefix
from adaptor.delivery.withdrawal import withdrawal_maker
from adaptor.itk import faults
from adaptor.itk.documents import DocumentKeys, NullificationUnreadable, document_keys, read_nullification
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import new_upper_uuid, utc_now
from adaptor.ops.metrics import Metrics
from adaptor.store import Accepted, Claim, Effect, MessageStore, NullificationStored, Status, StoreError
from adaptor.store.index import bundle_facts

log = logging.getLogger("adaptor.service")  # pinned: the JSON log format names it


@dataclass(frozen=True)
class _Conversion:
    """The Bundle text of a message, or why there is none: the reason kept for operators (may quote the
    document) and the fault that answers the sender."""

    bundle: str | None
    converted_at: datetime
    reason: str = ""
    fault: faults.ItkFault | None = None
    #: What the search index keeps of the Bundle (:func:`adaptor.store.index.bundle_facts`): patient data.
    facts: dict[str, Any] = field(default_factory=dict)


class ReceiverService:
    """Accepts validated ITK messages. Thread-safe: share one instance between request threads.

    ``wake`` is called after a message is queued for the outbox (the in-process workers'
    :meth:`~adaptor.delivery.outbox.OutboxWorker.wake`); without it the workers find the message at their next poll.
    ``metrics`` counts accepted messages, resends and conversion times (and, in sync mode, the deliveries made
    here); without it they are counted in a :class:`~adaptor.ops.metrics.Metrics` nobody reads. ``deliverer``
    delivers in sync mode: the outbox worker's, so that its threads also write an outcome a request thread could
    not record (:meth:`~adaptor.delivery.outbox.Deliverer.record_unrecorded`); one of its own without it.
    """

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        forwarder: Forwarder,
        *,
        wake: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        deliverer: Deliverer | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.forwarder = forwarder
        self.synchronous = settings.delivery_mode == "sync"
        self.metrics = metrics or Metrics()
        self._deliverer = deliverer or Deliverer(settings, store, forwarder, metrics=self.metrics)
        self._wake = wake or (lambda: None)
        self._owner_prefix = process_owner_prefix()

    def accept(self, message: ItkMessage, raw: bytes) -> None:
        """Convert ``message`` and store it with its Bundle (``raw`` = the request bytes), and in sync mode
        deliver it, before returning.

        Raises a 2100 :class:`~adaptor.itk.faults.ItkFault` when the message could not be stored (or, in sync
        mode, delivered yet), a 2200 one (E3) when it cannot be converted, and a 2200 one (E2) when, in sync
        mode, the target refused it for good.
        """
        record_id = str(uuid.uuid4())
        if message.is_nullification:
            self._accept_nullification(message, raw, record_id)
            return
        conversion = self._convert(message, record_id)
        document = document_keys(message.selected)
        if self.synchronous:
            self._accept_sync(message, raw, record_id, conversion, document)
        else:
            self._accept_async(message, raw, record_id, conversion, document)

    # -- conversion ------------------------------------------------------------------------------------------

    def _convert(self, message: ItkMessage, record_id: str) -> _Conversion:
        """The Bundle of ``message`` with ids drawn from ``record_id``, or the reason and fault when there is none."""
        started, converted_at = time.perf_counter(), utc_now()
        try:
            converted = convert_message(message, config=self.settings, now=converted_at, id_seed=record_id)
            bundle, facts = bundle_text(converted), bundle_facts(converted)
        except ConversionError as exc:
            # The reason can quote document values: it goes to the store, and to the log only at DEBUG.
            log.debug("conversion failure detail", extra={"message_id": message.message_id, "error": str(exc)})
            fault = faults.unconvertible(exc.element, relates_to=message.message_id)
            return _Conversion(None, converted_at, _clip(f"conversion failed: {exc}"), fault)
        except Exception as exc:  # a defect outside the mapping: still kept for operators, under an error id
            error_id = faults.log_internal_error(log, "conversion crashed", exc, message_id=message.message_id)
            reason = f"conversion failed: internal conversion error {error_id}"
            return _Conversion(None, converted_at, reason, faults.internal(error_id, relates_to=message.message_id))
        finally:
            self.metrics.conversion_took(time.perf_counter() - started)
        return _Conversion(bundle, converted_at, facts=facts)

    def _store_rejected(
        self,
        message: ItkMessage,
        raw: bytes,
        record_id: str,
        conversion: _Conversion,
        document: DocumentKeys | None = None,
    ) -> str:
        """Keep a message that cannot be converted and answer its fault; for a resend of a stored message,
        return the stored record's id instead (what the resend gets is decided by that record)."""
        stored_id, is_new = self.store.reject(message, raw, conversion.reason, record_id=record_id, document=document)
        if not is_new:
            return stored_id
        assert conversion.fault is not None
        log.error(
            "message rejected: it cannot be converted",
            extra={**_fields(message, stored_id), "rule": conversion.fault.rule, "delivery": "never"},
        )
        raise conversion.fault

    def _resend_of_rejected(self, message: ItkMessage, record_id: str, conversion: _Conversion) -> bool:
        """A resend whose stored record may be ``rejected``: it is converted again, with the record's own id as
        the seed. Raises the fault while it still cannot be converted; adopts the Bundle (the record is queued,
        or held for this synchronous sender) when it can. Returns whether the record had been rejected.
        Raises :class:`StoreError`."""
        if self.store.state_of(record_id) is not Status.REJECTED:
            return False
        if conversion.bundle is not None:  # convertible now: again, with the stored record's seed
            conversion = self._convert(message, record_id)
        if conversion.bundle is None:
            log.info("resend received", extra={**_fields(message, record_id), "delivery": "rejected again"})
            assert conversion.fault is not None
            raise conversion.fault
        adopted = self.store.adopt_bundle(
            record_id, conversion.bundle, conversion.converted_at, for_sender=self.synchronous, facts=conversion.facts
        )
        log.info(
            "resend received",
            extra={
                **_fields(message, record_id),
                "delivery": "rejected before, converts now: accepted" if adopted else "accepted by another copy",
            },
        )
        return True

    def _store(
        self,
        message: ItkMessage,
        raw: bytes,
        record_id: str,
        conversion: _Conversion,
        document: DocumentKeys,
        **claim: Any,
    ) -> Accepted:
        """Store ``message`` with its Bundle (``claim``: a synchronous sender's ``claim_for`` and ``lease_seconds``),
        or as rejected when it has none (which raises its fault for a new message). Raises :class:`StoreError`."""
        if conversion.bundle is None:
            return Accepted(self._store_rejected(message, raw, record_id, conversion, document), False)
        return self.store.accept_message(
            message,
            raw,
            conversion.bundle,
            converted_at=conversion.converted_at,
            record_id=record_id,
            document=document,
            facts=conversion.facts,
            **claim,
        )

    # -- async -----------------------------------------------------------------------------------------------

    def _accept_async(
        self, message: ItkMessage, raw: bytes, record_id: str, conversion: _Conversion, document: DocumentKeys
    ) -> None:
        try:
            accepted = self._store(message, raw, record_id, conversion, document)
            stored_id, is_new = accepted.record_id, accepted.is_new
            if not is_new and self._resend_of_rejected(message, stored_id, conversion):
                self.metrics.resend_received()
                self._wake()
                return
        except StoreError as exc:
            self._store_failed(message, exc)
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc
        if is_new:
            self.metrics.message_accepted()
            if not self._withdrawn_on_arrival(message, accepted):
                log.info("message accepted", extra={**_fields(message, stored_id), "delivery": "queued"})
                self._wake()
            return
        # Already stored, so the answer is OK whatever happens next; only a message held for this resend by a
        # failed synchronous delivery (the mode was switched since) needs handing to the workers.
        self.metrics.resend_received()
        try:
            requeued = self.store.requeue_held(stored_id)
        except StoreError as exc:
            log.error(
                "resend: could not check for a held delivery", extra={"record_id": stored_id, "error": str(exc)}
            )
            requeued = False
        log.info(
            "resend received",
            extra={
                **_fields(message, stored_id),
                "delivery": "held delivery queued again" if requeued else "already stored, not delivered again",
            },
        )
        if requeued:
            self._wake()

    # -- sync ------------------------------------------------------------------------------------------------

    def _accept_sync(
        self, message: ItkMessage, raw: bytes, record_id: str, conversion: _Conversion, document: DocumentKeys
    ) -> None:
        owner = f"{self._owner_prefix}/sync-{threading.get_ident()}"
        lease = self.settings.delivery_lease_seconds
        try:
            accepted = self._store(message, raw, record_id, conversion, document, claim_for=owner, lease_seconds=lease)
            stored_id, is_new = accepted.record_id, accepted.is_new
            if is_new and accepted.nullified_by is not None:
                claim: Claim | Status = Status.NULLIFIED
            elif is_new:
                assert conversion.bundle is not None
                claim = Claim.for_new_message(
                    stored_id, message, raw, conversion.bundle, conversion.converted_at, owner
                )
            else:
                self._resend_of_rejected(message, stored_id, conversion)
                claim = self.store.claim_for_sender(stored_id, owner, lease)
        except StoreError as exc:
            self._store_failed(message, exc)
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc

        if is_new:
            self.metrics.message_accepted()
            if self._withdrawn_on_arrival(message, accepted):
                return
        else:
            self.metrics.resend_received()
        if claim is Status.DELIVERED:
            log.info("resend received", extra={**_fields(message, stored_id), "delivery": "already delivered"})
            return
        if claim is Status.NULLIFIED:
            log.info("resend received", extra={**_fields(message, stored_id), "delivery": "withdrawn by its sender"})
            return
        if isinstance(claim, Status):
            # Another request (a concurrent copy of this resend) is delivering it right now.
            log.info(
                "resend received",
                extra={**_fields(message, stored_id), "delivery": "being delivered by another request"},
            )
            raise faults.retryable("The message is being delivered", relates_to=message.message_id)
        log.info(
            "message accepted" if is_new else "resend received",
            extra={**_fields(message, stored_id), "delivery": "delivering now"},
        )

        try:
            outcome = self._deliverer.deliver(claim)
        except StoreError as exc:
            # Nothing was sent; the message stays claimed until its lease expires, then held for the resend.
            log.error("store failed before delivery", extra={"record_id": stored_id, "error": str(exc)})
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc
        if outcome.status is Status.DELIVERED:
            return  # even if recording it failed: the target has it, which is what OK means here
        if outcome.status is Status.DEAD_LETTER:
            # Retrying cannot help; the cause is on the record and, under this error id, in the log.
            error_id = outcome.error_id or new_upper_uuid()
            log.error(
                "dead-lettered message answered 2200",
                extra={"record_id": stored_id, "message_id": message.message_id, "error_id": error_id},
            )
            raise faults.internal(error_id, relates_to=message.message_id)
        raise faults.retryable("The message could not be delivered", relates_to=message.message_id)

    # -- nullification -------------------------------------------------------------------------------------------

    def _withdrawn_on_arrival(self, message: ItkMessage, accepted: Accepted) -> bool:
        """A new message its sender withdrew before it arrived: say so; it is never delivered. Returns whether it
        was one."""
        if accepted.nullified_by is None:
            return False
        self.metrics.message_nullified(withdrawal=False)
        log.info(
            "message accepted",
            extra={
                **_fields(message, accepted.record_id),
                "delivery": "never: withdrawn by its sender before it arrived",
                "nullification_record_id": accepted.nullified_by,
            },
        )
        return True

    def _accept_nullification(self, message: ItkMessage, raw: bytes, record_id: str) -> None:
        """Store a nullification and withdraw what it names (OK once stored, in both modes); E3 when it does not
        say which document it withdraws."""
        try:
            nullification = read_nullification(message.selected)
        except NullificationUnreadable as exc:
            log.debug("nullification unreadable detail", extra={"message_id": message.message_id, "error": str(exc)})
            fault = faults.unconvertible(exc.element, relates_to=message.message_id)
            conversion = _Conversion(None, utc_now(), _clip(f"nullification cannot be processed: {exc}"), fault)
            try:
                self._store_rejected(message, raw, record_id, conversion)
            except StoreError as store_error:
                self._store_failed(message, store_error)
                raise faults.retryable("The message could not be stored", relates_to=message.message_id) from None
            raise fault from None  # an identical resend is as unreadable as the request it repeats
        made = withdrawal_maker(
            nullification, interaction=message.interaction, nullification_record_id=record_id, now=utc_now()
        )
        try:
            stored = self.store.accept_nullification(message, raw, nullification, withdrawal=made, record_id=record_id)
        except StoreError as exc:
            self._store_failed(message, exc)
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc
        self._nullification_stored(message, nullification.withdraws, stored)

    def _nullification_stored(self, message: ItkMessage, withdraws: DocumentKeys, stored: NullificationStored) -> None:
        """Count and log what storing a nullification did, and wake the workers for the withdrawals it queued."""
        fields = _fields(message, stored.record_id)
        if not stored.is_new:
            self.metrics.resend_received()
            log.info("resend received", extra={**fields, "delivery": "nullification already stored: nothing changes"})
            return
        self.metrics.message_accepted()
        outcome = "withdrew" if stored.changed else "repeated" if stored.matched else "unmatched"
        self.metrics.nullification_received(outcome)
        document = {
            "withdraws_document_id": withdraws.document_id,
            "withdraws_set_id": withdraws.set_id,
            "withdraws_version": withdraws.version,
        }
        if not stored.matched:
            log.warning("nullification unmatched: the message it withdraws is not stored", extra={**fields, **document})
            return
        for withdrawn in stored.withdrawn:
            if withdrawn.effect is not Effect.ALREADY_NULLIFIED:
                self.metrics.message_nullified(withdrawal=withdrawn.effect is Effect.WITHDRAWAL_QUEUED)
            log.info(
                "message nullified",
                extra={
                    "record_id": withdrawn.record_id,
                    "message_id": withdrawn.message_id,
                    "nullification_record_id": stored.record_id,
                    "effect": withdrawn.effect.value,
                    "bundle_version": withdrawn.withdrawal_version,
                },
            )
        log.info("nullification accepted", extra={**fields, **document, "withdrawn": len(stored.withdrawn)})
        if any(w.effect is Effect.WITHDRAWAL_QUEUED for w in stored.withdrawn):
            self._wake()

    @staticmethod
    def _store_failed(message: ItkMessage, exc: StoreError) -> None:
        # The StoreError's text names the database problem, never the statement's values.
        log.error(
            "message not stored",
            extra={"message_id": message.message_id, "tracking_id": message.tracking_id, "error": str(exc)},
        )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


def _fields(message: ItkMessage, record_id: str) -> dict[str, object]:
    """The log fields (:mod:`adaptor.ops.logs`) that identify a stored message: identifiers, never content."""
    return {
        "record_id": record_id,
        "message_id": message.message_id,
        "tracking_id": message.tracking_id,
        "interaction": message.interaction,
        "ods_code": ",".join(message.ods_codes) or None,
    }
