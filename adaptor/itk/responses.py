"""The synchronous SOAP 1.1 answers (wire-contract.md section 5): ``SimpleMessageResponse`` and faults.

Both are built element by element with lxml and serialised as UTF-8 with an XML declaration, so every text is
escaped by the serialiser (the reference's string templates broke on ``<`` and ``&``). Characters XML 1.0 does
not allow are removed first, since lxml refuses them.
"""

from __future__ import annotations

import re

from lxml import etree

from adaptor.itk.faults import ERROR_CODE_SYSTEM, FaultCode, ItkFault
from adaptor.itk.wire import new_upper_uuid
from adaptor.itk.xmlsafe import ITK, SOAP11, WSA

SOAP_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/fault"

#: Fixed faultstring per faultcode (section 5.2).
FAULT_STRINGS = {
    FaultCode.CLIENT: "A client related error has occurred, see detail element for further information",
    FaultCode.SERVER: "A Server related error has occurred, see detail element for further information",
    FaultCode.VERSION_MISMATCH: "SOAP version mismatch: SOAP 1.1 envelope required",
    FaultCode.MUST_UNDERSTAND: "A mandatory SOAP header was not understood",
}

#: wsa:Action of a fault: MustUnderstand uses the WS-Addressing fault action, the others the SOAP fault action
#: the accreditation harness requires.
FAULT_ACTIONS = {
    FaultCode.CLIENT: SOAP_FAULT_ACTION,
    FaultCode.SERVER: SOAP_FAULT_ACTION,
    FaultCode.VERSION_MISMATCH: SOAP_FAULT_ACTION,
    FaultCode.MUST_UNDERSTAND: WSA_FAULT_ACTION,
}

MAX_TEXT = 2000

_NSMAP = {"soap": SOAP11, "wsa": WSA}
# The faultcode text "soap:Client" needs the soap prefix in scope: it is declared on the Envelope.
_FAULT_NSMAP = {**_NSMAP, "itk": ITK}
_NOT_XML_10 = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# An E2 diagnostic carries the error id its cause was logged under; the ErrorID repeats it (faults.internal).
_INTERNAL_ERROR_ID = re.compile(r"^Internal Error ([0-9A-F]{8}(?:-[0-9A-F]{4}){3}-[0-9A-F]{12})$")


def xml_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` without the characters XML 1.0 forbids, cut to ``limit`` characters."""
    return _NOT_XML_10.sub("", text)[:limit]


def _envelope(
    action: str, relates_to: str | None, nsmap: dict[str, str] = _NSMAP
) -> tuple[etree._Element, etree._Element]:
    """A SOAP 1.1 Envelope with its WS-Addressing header filled in; returns (Envelope, Body)."""
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap=nsmap)
    header = etree.SubElement(envelope, f"{{{SOAP11}}}Header")
    etree.SubElement(header, f"{{{WSA}}}MessageID").text = new_upper_uuid()
    etree.SubElement(header, f"{{{WSA}}}Action").text = xml_text(action)
    if relates_to and xml_text(relates_to).strip():
        etree.SubElement(header, f"{{{WSA}}}RelatesTo").text = xml_text(relates_to).strip()
    return envelope, etree.SubElement(envelope, f"{{{SOAP11}}}Body")


_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


def _serialise(envelope: etree._Element) -> bytes:
    # lxml would write the declaration with single quotes; this is the form wire-contract.md section 5 shows.
    return _XML_DECLARATION + etree.tostring(envelope, encoding="UTF-8", xml_declaration=False)


def success_response(request_message_id: str | None, request_action: str, *, ok_text: str = "OK") -> bytes:
    """The HTTP 200 body: a new MessageID, Action = the request's Action + ``Response``, RelatesTo = the
    request's MessageID (when known) and ``itk:SimpleMessageResponse`` with ``ok_text``."""
    envelope, body = _envelope(request_action.strip() + "Response", request_message_id)
    response = etree.SubElement(body, f"{{{ITK}}}SimpleMessageResponse", nsmap={"itk": ITK})
    response.text = xml_text(ok_text)
    return _serialise(envelope)


def fault_response(fault: ItkFault, *, error_id: str | None = None) -> tuple[bytes, str]:
    """The HTTP 500 body for ``fault`` and the ErrorID it carries (log it with the cause).

    ``error_id`` defaults to the id in an E2 diagnostic (``Internal Error <id>``), else a new upper-case UUID.
    """
    if error_id is None:
        match = _INTERNAL_ERROR_ID.match(fault.diagnostic or "")
        error_id = match.group(1) if match else new_upper_uuid()
    envelope, body = _envelope(FAULT_ACTIONS[fault.faultcode], fault.relates_to, _FAULT_NSMAP)
    soap_fault = etree.SubElement(body, f"{{{SOAP11}}}Fault")
    # faultcode, faultstring and detail are unqualified (SOAP 1.1 section 4.4); faultactor is omitted.
    etree.SubElement(soap_fault, "faultcode").text = f"soap:{fault.faultcode.value}"
    etree.SubElement(soap_fault, "faultstring").text = FAULT_STRINGS[fault.faultcode]
    detail = etree.SubElement(soap_fault, "detail")
    info = etree.SubElement(detail, f"{{{ITK}}}ToolkitErrorInfo")
    etree.SubElement(info, f"{{{ITK}}}ErrorID").text = error_id
    code = etree.SubElement(info, f"{{{ITK}}}ErrorCode", codeSystem=ERROR_CODE_SYSTEM)
    code.text = str(fault.error_code)
    etree.SubElement(info, f"{{{ITK}}}ErrorText").text = xml_text(fault.text).strip() or "Error"
    diagnostic = xml_text(fault.diagnostic or "").strip()
    if diagnostic:
        etree.SubElement(info, f"{{{ITK}}}ErrorDiagnosticText").text = diagnostic
    return _serialise(envelope), error_id
