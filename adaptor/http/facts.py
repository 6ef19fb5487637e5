"""What each ITK request turned out to be, and what is kept of each fault answered: for the dispatcher
(:mod:`adaptor.http.app`) and the SOAP endpoint (:mod:`adaptor.http.soap`) alike, with nothing of spyne.

* :class:`RequestFacts`: the request's identifiers and the fault answered, which the dispatcher leaves in the
  WSGI environ (:data:`REQUEST_FACTS`) for the endpoint to fill in; read back for the request's summary log line
  and its metrics.
* :func:`answer_fault`: a fault's response bytes, with its log line (:func:`log_fault`), its facts and its row
  in the store's ``rejections`` table (:func:`note_rejection`): the rule, the codes and texts sent, and the
  request's identifiers; never its body.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from adaptor.itk import responses
from adaptor.itk.faults import ItkFault
from adaptor.itk.message import ItkMessage
from adaptor.itk.wire import sender_ods
from adaptor.store import MessageStore, Rejection, StoreError

# Pinned: the JSON log format names it; fault lines were always the SOAP endpoint's.
log = logging.getLogger("adaptor.soap")

#: The WSGI environ key under which the dispatcher hands the SOAP endpoint a :class:`RequestFacts` to fill in.
REQUEST_FACTS = "adaptor.request_facts"


@dataclass
class RequestFacts:
    """What one ITK request turned out to be, as far as it was read: for its summary log line and its metrics.

    Identifiers only (never content): filled in by the SOAP endpoint once the message validated or when it
    answered a fault, and by the dispatcher for the faults it answers itself.
    """

    message_id: str | None = None
    tracking_id: str | None = None
    interaction: str | None = None
    ods_code: str | None = None
    sender_ods: str | None = None
    fault: ItkFault | None = None
    error_id: str | None = None

    def note_message(self, message: ItkMessage) -> None:
        self.message_id = message.message_id
        self.tracking_id = message.tracking_id
        self.interaction = message.interaction
        self.ods_code = ",".join(message.ods_codes) or None
        self.sender_ods = sender_ods(message.sender)

    def note_fault(
        self, fault: ItkFault, error_id: str, *, tracking_id: str | None = None, sender: str | None = None
    ) -> None:
        self.fault, self.error_id = fault, error_id
        self.message_id = self.message_id or fault.relates_to
        self.tracking_id = self.tracking_id or tracking_id
        self.sender_ods = self.sender_ods or sender

    def log_fields(self) -> dict[str, object]:
        """The log fields (:mod:`adaptor.ops.logs`) of what is known; unknown ones are ``None``."""
        fault = self.fault
        return {
            "message_id": self.message_id,
            "tracking_id": self.tracking_id,
            "interaction": self.interaction,
            "ods_code": self.ods_code,
            "sender_ods": self.sender_ods,
            "error_code": fault.error_code if fault is not None else None,
            "rule": (fault.rule or None) if fault is not None else None,
            "error_id": self.error_id,
        }


def request_facts(environ: dict[str, Any]) -> RequestFacts:
    """The :class:`RequestFacts` of this request (a throwaway one when the dispatcher left none)."""
    facts = environ.get(REQUEST_FACTS)
    return facts if isinstance(facts, RequestFacts) else RequestFacts()


def answer_fault(
    fault: ItkFault,
    store: MessageStore,
    facts: RequestFacts,
    *,
    tracking_id: str | None = None,
    sender: str | None = None,
) -> bytes:
    """The response bytes of ``fault``, once it is logged, noted in ``facts`` and kept in ``store``'s
    ``rejections`` table (``tracking_id`` and ``sender``: the request's, as far as they could be read)."""
    body, error_id = responses.fault_response(fault)
    log_fault(fault, error_id, tracking_id=tracking_id, sender=sender)
    facts.note_fault(fault, error_id, tracking_id=tracking_id, sender=sender)
    note_rejection(store, fault, error_id, tracking_id=tracking_id, sender=sender)
    return body


def log_fault(
    fault: ItkFault, error_id: str, *, tracking_id: str | None = None, sender: str | None = None
) -> None:
    """One line per fault; client faults at INFO (the sender's problem), server faults at ERROR.

    The ErrorText is logged (fixed phrases, never patient data); the diagnostic text can quote validator
    messages about document content, so it is logged at DEBUG only, under the same error id.
    """
    level = logging.ERROR if fault.error_code in (2100, 2200) else logging.INFO
    log.log(
        level,
        "fault answered",
        extra={
            "error_code": fault.error_code,
            "rule": fault.rule or None,
            "faultcode": fault.faultcode.value,
            "error_id": error_id,
            "error_text": fault.text,
            "message_id": fault.relates_to,
            "tracking_id": tracking_id,
            "sender_ods": sender,
        },
    )
    if fault.diagnostic:
        log.debug("fault diagnostic", extra={"error_id": error_id, "diagnostic": fault.diagnostic})


def note_rejection(
    store: MessageStore,
    fault: ItkFault,
    error_id: str,
    *,
    tracking_id: str | None = None,
    sender: str | None = None,
) -> None:
    """Keep the refusal in the store's ``rejections`` table, for the console's counters and list.

    Never raises: the sender's answer is already decided, and a store that cannot record the refusal (the same
    outage that caused a 2100, say) must not change it. The diagnostic text is not kept (it can quote document
    content), nor anything else of the request.
    """
    rejection = Rejection(
        rule=fault.rule,
        error_code=fault.error_code,
        error_text=fault.text,
        error_id=error_id,
        message_id=fault.relates_to,
        tracking_id=tracking_id,
        sender_ods=sender,
    )
    try:
        store.record_rejection(rejection)
    except StoreError as exc:  # its text names the database problem, never the statement's values
        log.warning("could not record the rejection", extra={"error_id": error_id, "error": str(exc)})
    except Exception as exc:
        log.warning("could not record the rejection", extra={"error_id": error_id, "error": type(exc).__name__})
