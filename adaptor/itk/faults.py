"""The ITK fault as a Python exception: what went wrong, in the terms of wire-contract.md section 5.2.

Raised anywhere on the request path; turned into the SOAP 1.1 fault envelope by :mod:`adaptor.itk.responses`.
:func:`log_internal_error` is the one way an unexpected exception is logged, on the request path (fault 2200)
and off it (the outbox, the console).
"""

from __future__ import annotations

import enum
import logging

from adaptor.itk.wire import new_upper_uuid

ERROR_CODE_SYSTEM = "2.16.840.1.113883.2.1.3.2.4.17.268"
SOAP_VALIDATION_FAILED = "Soap validation failed"


class FaultCode(enum.Enum):
    """The SOAP 1.1 faultcode (local part; the prefix is bound to the SOAP 1.1 namespace)."""

    CLIENT = "Client"
    SERVER = "Server"
    VERSION_MISMATCH = "VersionMismatch"
    MUST_UNDERSTAND = "MustUnderstand"


class ItkFault(Exception):
    """A request that must be answered with a SOAP fault.

    ``error_code`` is the ITK ErrorCode: 1000 invalid message, 2100 retryable processing error, 2200 permanent
    processing error, 3000 access denied. ``text`` and ``diagnostic`` go to ErrorText and ErrorDiagnosticText:
    they are shown to the sender, so they never carry stack traces or patient data.
    ``relates_to`` is the request's wsa:MessageID when it could be read.
    """

    def __init__(
        self,
        error_code: int,
        text: str,
        diagnostic: str | None = None,
        *,
        faultcode: FaultCode | None = None,
        relates_to: str | None = None,
        rule: str = "",
    ) -> None:
        super().__init__(text)
        self.error_code = error_code
        self.text = text
        self.diagnostic = diagnostic
        self.faultcode = faultcode or (FaultCode.SERVER if error_code in (2100, 2200) else FaultCode.CLIENT)
        self.relates_to = relates_to
        #: The wire-contract rule that fired (``C4``...), for logs and metrics; never sent.
        self.rule = rule

    def __repr__(self) -> str:
        return f"ItkFault({self.rule or '-'} {self.error_code} {self.faultcode.value}: {self.text!r})"


def invalid(rule: str, text: str, diagnostic: str | None = SOAP_VALIDATION_FAILED, **kw: object) -> ItkFault:
    """A 1000 (invalid message) fault for ``rule``."""
    return ItkFault(1000, text, diagnostic, rule=rule, **kw)  # type: ignore[arg-type]


def retryable(text_or_cause: str, *, relates_to: str | None = None) -> ItkFault:
    """A 2100 fault: a transient failure after validation; the sender should retry (rule E1)."""
    return ItkFault(
        2100, "Temporary processing error, please retry", text_or_cause, relates_to=relates_to, rule="E1"
    )


def internal(error_id: str, *, relates_to: str | None = None) -> ItkFault:
    """A 2200 fault: an unexpected internal error (rule E2). The cause is logged (:func:`log_internal_error`),
    never sent."""
    return ItkFault(
        2200,
        "Internal Error. Please contact your system Administrator",
        f"Internal Error {error_id}",
        relates_to=relates_to,
        rule="E2",
    )


#: The ErrorText of rule E3 (ErrorCode 2200).
UNCONVERTIBLE_TEXT = "ClinicalDocument could not be converted"


def unconvertible(element: str, *, relates_to: str | None = None) -> ItkFault:
    """A 2200 fault: the message passed validation but cannot be converted to the FHIR Encounter Report (rule
    E3). Receiver-side and permanent: the message was valid by every published rule, what failed is this
    receiver's mapping of it, and sending it again unchanged gives the same result. The diagnostic names the
    element that failed, never its value (which can be patient data)."""
    return ItkFault(
        2200, UNCONVERTIBLE_TEXT, f"Cannot convert {element}"[:2000], relates_to=relates_to, rule="E3"
    )


def log_internal_error(log: logging.Logger, event: str, cause: BaseException, **fields: object) -> str:
    """Log an unexpected exception under a new error id, and return the id (the ErrorID of fault 2200).

    The ERROR line is ``event`` with the given identifiers (``message_id``, ``record_id``...), the ``error_id``
    and the exception's type as fields. The exception's text and traceback can quote request content, so they
    go only to the DEBUG line ``internal error traceback`` under the same ``error_id``.
    """
    error_id = new_upper_uuid()
    log.error(event, extra={**fields, "error_id": error_id, "error": type(cause).__name__})
    log.debug("internal error traceback", extra={"error_id": error_id}, exc_info=cause)
    return error_id
