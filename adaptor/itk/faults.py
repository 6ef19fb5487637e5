"""The ITK fault as a Python exception: what went wrong, in the terms of wire-contract.md section 5.2.

Raised anywhere on the request path; turned into the SOAP 1.1 fault envelope by :mod:`adaptor.responses`.
"""

from __future__ import annotations

import enum

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
    """A 2200 fault: an unexpected internal error (rule E2). The cause is logged, never sent."""
    return ItkFault(
        2200,
        "Internal Error. Please contact your system Administrator",
        f"Internal Error {error_id}",
        relates_to=relates_to,
        rule="E2",
    )
