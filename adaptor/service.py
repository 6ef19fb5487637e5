"""The accept pipeline for a validated message: store durably, then convert and deliver.

Independent of SOAP and HTTP: :mod:`adaptor.soap` calls :meth:`ReceiverService.accept` once a request passed
validation and answers ``OK`` when it returns. Only a failure to store the message stops the OK (fault 2100,
the sender retries); conversion and delivery failures are recorded on the stored message, which is safe and
can be converted or delivered again later.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING

from . import faults
from .config import Settings
from .convert import ConversionError, convert
from .forwarders import Delivery, Forwarder
from .message import ItkMessage
from .store import MessageStore, Status, StoreError

if TYPE_CHECKING:
    from .allowlist import AllowList

log = logging.getLogger(__name__)

#: Longest status reason kept on a stored message.
MAX_REASON = 2000


class ReceiverService:
    """Accepts validated ITK messages. Thread-safe: share one instance between request threads.

    ``allow_list`` is not used here; it belongs to the receiver so that the SOAP layer validates against the
    same list the service was built with.
    """

    def __init__(self, settings: Settings, store: MessageStore, forwarder: Forwarder, allow_list: AllowList) -> None:
        self.settings = settings
        self.store = store
        self.forwarder = forwarder
        self.allow_list = allow_list

    def accept(self, message: ItkMessage, raw: bytes) -> None:
        """Store ``message`` (``raw`` = the request bytes) before returning; then convert and deliver it.

        Returns normally whenever the message is stored, including an identical resend of a stored message
        (nothing is stored or delivered again). Raises a 2100 :class:`~adaptor.faults.ItkFault` when the store
        fails.
        """
        try:
            record_id, is_new = self.store.accept(message, raw)
        except StoreError as exc:
            log.error("store failed message_id=%s: %s", message.message_id, exc)
            raise faults.retryable("The message could not be stored", relates_to=message.message_id) from exc
        if not is_new:
            log.info(
                "resend record=%s message_id=%s tracking_id=%s: already stored, not delivered again",
                record_id,
                message.message_id,
                message.tracking_id,
            )
            return
        log.info(
            "accepted record=%s message_id=%s tracking_id=%s interaction=%s",
            record_id,
            message.message_id,
            message.tracking_id,
            message.interaction,
        )
        # The message is committed: nothing below may turn the answer into a fault. Until a separate delivery
        # worker exists, conversion and delivery run here, in the request thread; failures are recorded.
        try:
            self._convert_and_deliver(record_id, message, raw)
        except StoreError as exc:
            log.error("could not record progress of record=%s: %s", record_id, exc)

    def _convert_and_deliver(self, record_id: str, message: ItkMessage, raw: bytes) -> None:
        try:
            bundle = convert(raw, config=self.settings)
        except ConversionError as exc:
            # The reason can quote document values: it goes to the stored record, and to the log only at DEBUG.
            log.warning("conversion failed record=%s message_id=%s", record_id, message.message_id)
            log.debug("conversion failed record=%s: %s", record_id, exc)
            self.store.set_status(record_id, Status.CONVERSION_FAILED, _reason(str(exc)))
            return
        except Exception:
            error_id = str(uuid.uuid4()).upper()
            log.error("conversion crashed record=%s error_id=%s", record_id, error_id)
            # The traceback may quote document content: keep it out of logs above DEBUG.
            log.debug("conversion crash error_id=%s", error_id, exc_info=True)
            self.store.set_status(record_id, Status.CONVERSION_FAILED, f"Internal conversion error {error_id}")
            return

        bundle_json = json.dumps(bundle, ensure_ascii=False)
        self.store.record_conversion(record_id, bundle_json)
        try:
            self.forwarder.send(
                Delivery(
                    record_id=record_id,
                    message_id=message.message_id,
                    tracking_id=message.tracking_id,
                    interaction=message.interaction,
                    ods_codes=message.ods_codes,
                    dos_ids=message.dos_ids,
                    bundle_json=bundle_json.encode("utf-8"),
                )
            )
        except Exception as exc:
            detail = _reason(f"{type(exc).__name__}: {exc}")
            log.error("delivery failed record=%s target=%s: %s", record_id, self.forwarder.target, detail)
            self.store.record_delivery(record_id, self.forwarder.target, succeeded=False, detail=detail)
            return
        self.store.record_delivery(record_id, self.forwarder.target, succeeded=True)
        log.info(
            "delivered record=%s message_id=%s target=%s",
            record_id,
            message.message_id,
            self.forwarder.target,
        )


def _reason(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"
