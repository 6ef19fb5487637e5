"""The synchronous answers (wire-contract.md section 5): success and fault envelopes, byte for byte rules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import require_shared, shared_tool
from itk_factory import build_request, find, to_bytes
from lxml import etree

from adaptor.config import Settings
from adaptor.itk import schemas
from adaptor.itk.allowlist import AllowList
from adaptor.itk.faults import ERROR_CODE_SYSTEM, FaultCode, ItkFault, internal, invalid, retryable
from adaptor.itk.responses import fault_response, success_response
from adaptor.itk.rules import parse_request, validate_request

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
ITK = "urn:nhs-itk:ns:201005"
NS = {"soap": SOAP11, "wsa": WSA, "itk": ITK}
UPPER_UUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
SERVICE = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"
REQUEST_ID = "2B77B3F5-3016-4A6D-821F-152CE420E58D"


def parse(body: bytes) -> etree._Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return etree.fromstring(body)


def header_text(envelope: etree._Element, name: str) -> str | None:
    return envelope.findtext(f"soap:Header/wsa:{name}", namespaces=NS)


@pytest.fixture(scope="module")
def published_message_types() -> schemas.CompiledSchema:
    return schemas._compile(require_shared("schemas", "iuc", "Schemas", "ITKMessageTypes-2010-05.xsd"))


# -- success ---------------------------------------------------------------------------------------------------------


def test_success_response() -> None:
    envelope = parse(success_response(REQUEST_ID, SERVICE))
    assert envelope.tag == f"{{{SOAP11}}}Envelope"
    message_id = header_text(envelope, "MessageID")
    assert message_id and UPPER_UUID.match(message_id) and message_id != REQUEST_ID
    assert header_text(envelope, "Action") == SERVICE + "Response"
    assert header_text(envelope, "RelatesTo") == REQUEST_ID
    assert envelope.find("soap:Header/wsa:To", NS) is None
    body = envelope.find("soap:Body", NS)
    assert [child.tag for child in body] == [f"{{{ITK}}}SimpleMessageResponse"]
    assert body[0].text == "OK"


def test_success_action_follows_the_request_action() -> None:
    dms = SERVICE + "_DMS"
    assert header_text(parse(success_response(REQUEST_ID, dms)), "Action") == dms + "Response"
    assert header_text(parse(success_response(REQUEST_ID, f" {SERVICE}\n")), "Action") == SERVICE + "Response"


def test_success_message_ids_are_new_each_time() -> None:
    ids = {header_text(parse(success_response(REQUEST_ID, SERVICE)), "MessageID") for _ in range(5)}
    assert len(ids) == 5


def test_success_without_request_message_id_has_no_relates_to() -> None:
    assert parse(success_response(None, SERVICE)).find("soap:Header/wsa:RelatesTo", NS) is None


def test_success_reference_compatible_text() -> None:
    envelope = parse(success_response(REQUEST_ID, SERVICE, ok_text=f"OK:{REQUEST_ID}"))
    assert envelope.findtext("soap:Body/itk:SimpleMessageResponse", namespaces=NS) == f"OK:{REQUEST_ID}"


def test_success_body_validates(published_message_types: schemas.CompiledSchema) -> None:
    response = parse(success_response(REQUEST_ID, SERVICE)).find("soap:Body/itk:SimpleMessageResponse", NS)
    assert published_message_types.errors(response) == []
    assert schemas.message_types_schema().errors(response) == []


def test_success_passes_the_black_box_check() -> None:
    body = success_response(REQUEST_ID, SERVICE)
    assert shared_tool("wire_check").check_ok(200, "text/xml; charset=utf-8", body, SERVICE, REQUEST_ID) is None


# -- faults ---------------------------------------------------------------------------------------------------------

FAULTS = [
    invalid("C4", "Manifest count and payload count don't match", relates_to=REQUEST_ID),
    ItkFault(3000, "Username missing", "Soap validation failed", rule="B12"),
    retryable("store unavailable", relates_to=REQUEST_ID),
    internal("0A1B2C3D-0000-4000-8000-00000000ABCD", relates_to=REQUEST_ID),
    ItkFault(1000, "SOAP version mismatch", faultcode=FaultCode.VERSION_MISMATCH, rule="A3"),
    ItkFault(1000, "Rejecting foreign header", "{urn:x}H", faultcode=FaultCode.MUST_UNDERSTAND, rule="A5"),
]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.rule)
def test_fault_envelope(fault: ItkFault, published_message_types: schemas.CompiledSchema) -> None:
    body, error_id = fault_response(fault)
    envelope = parse(body)
    assert envelope.tag == f"{{{SOAP11}}}Envelope"  # SOAP 1.1 even for VersionMismatch
    message_id = header_text(envelope, "MessageID")
    assert message_id and UPPER_UUID.match(message_id)
    assert header_text(envelope, "RelatesTo") == fault.relates_to
    assert envelope.find("soap:Header/wsa:To", NS) is None

    soap_fault = envelope.find("soap:Body/soap:Fault", NS)
    assert [child.tag for child in soap_fault] == ["faultcode", "faultstring", "detail"]  # unqualified, no faultactor
    prefix, _, local = soap_fault.findtext("faultcode").partition(":")
    assert soap_fault.nsmap[prefix] == SOAP11 and local == fault.faultcode.value

    info = soap_fault.find("detail/itk:ToolkitErrorInfo", NS)
    assert UPPER_UUID.match(error_id) and info.findtext("itk:ErrorID", namespaces=NS) == error_id
    code = info.find("itk:ErrorCode", NS)
    assert (code.text, code.get("codeSystem")) == (str(fault.error_code), ERROR_CODE_SYSTEM)
    assert info.findtext("itk:ErrorText", namespaces=NS) == fault.text
    assert info.findtext("itk:ErrorDiagnosticText", namespaces=NS) == fault.diagnostic
    assert published_message_types.errors(info) == []
    assert schemas.message_types_schema().errors(info) == []


@pytest.mark.parametrize(
    ("faultcode", "action", "faultstring"),
    [
        (
            FaultCode.CLIENT,
            "http://www.w3.org/2005/08/addressing/soap/fault",
            "A client related error has occurred, see detail element for further information",
        ),
        (
            FaultCode.SERVER,
            "http://www.w3.org/2005/08/addressing/soap/fault",
            "A Server related error has occurred, see detail element for further information",
        ),
        (
            FaultCode.VERSION_MISMATCH,
            "http://www.w3.org/2005/08/addressing/soap/fault",
            "SOAP version mismatch: SOAP 1.1 envelope required",
        ),
        (
            FaultCode.MUST_UNDERSTAND,
            "http://www.w3.org/2005/08/addressing/fault",
            "A mandatory SOAP header was not understood",
        ),
    ],
)
def test_fault_action_and_faultstring(faultcode: FaultCode, action: str, faultstring: str) -> None:
    envelope = parse(fault_response(ItkFault(1000, "x", faultcode=faultcode))[0])
    assert header_text(envelope, "Action") == action
    assert envelope.findtext("soap:Body/soap:Fault/faultstring", namespaces=NS) == faultstring


def test_server_faults_pair_with_2100_and_2200() -> None:
    for fault in (retryable("x"), internal("0A1B2C3D-0000-4000-8000-00000000ABCD")):
        envelope = parse(fault_response(fault)[0])
        assert envelope.findtext("soap:Body/soap:Fault/faultcode", namespaces=NS) == "soap:Server"


def test_fault_texts_are_escaped() -> None:
    fault = invalid("A2", "This is not a valid XML message", "not well-formed XML: <a> & </b> ]]> \"'")
    body, _ = fault_response(fault)
    assert b"<a>" not in body and b"&lt;a&gt; &amp; &lt;/b&gt;" in body
    text = parse(body).findtext(".//itk:ErrorDiagnosticText", namespaces=NS)
    assert text == "not well-formed XML: <a> & </b> ]]> \"'"


def test_characters_not_allowed_in_xml_are_removed() -> None:
    fault = invalid("B3", "Invalid Send To value: a\x00b\x1fc\ufffed", "d\x0be\ud800f")
    envelope = parse(fault_response(fault)[0])
    assert envelope.findtext(".//itk:ErrorText", namespaces=NS) == "Invalid Send To value: abcd"
    assert envelope.findtext(".//itk:ErrorDiagnosticText", namespaces=NS) == "def"


def test_diagnostic_is_at_most_2000_characters() -> None:
    envelope = parse(fault_response(invalid("C18", "schema validation failed", "x" * 5000))[0])
    assert envelope.findtext(".//itk:ErrorDiagnosticText", namespaces=NS) == "x" * 2000


def test_empty_diagnostic_is_omitted_and_error_text_never_empty() -> None:
    envelope = parse(fault_response(ItkFault(1000, " ", None))[0])
    assert envelope.find(".//itk:ErrorDiagnosticText", NS) is None
    assert envelope.findtext(".//itk:ErrorText", namespaces=NS) == "Error"


def test_error_ids_are_new_per_fault_except_for_internal_errors() -> None:
    fault = invalid("C4", "x")
    assert fault_response(fault)[1] != fault_response(fault)[1]
    error_id = "0A1B2C3D-0000-4000-8000-00000000ABCD"
    assert fault_response(internal(error_id))[1] == error_id  # the id the cause was logged under
    assert fault_response(fault, error_id=error_id)[1] == error_id


def test_fault_without_relates_to() -> None:
    envelope = parse(fault_response(invalid("A4", "DistributionEnvelope missing"))[0])
    assert envelope.find("soap:Header/wsa:RelatesTo", NS) is None
    assert b"null" not in fault_response(invalid("A4", "DistributionEnvelope missing"))[0]


# -- validator faults through the black-box checker ----------------------------------------------------------------


def _faults_from_validation() -> list[tuple[ItkFault, set[str], str]]:
    settings = Settings()
    allow_list = AllowList(settings)
    cases: list[tuple[bytes, set[str], str]] = []
    root = build_request()
    cases.append(
        (
            to_bytes(root).replace(SOAP11.encode(), b"http://www.w3.org/2003/05/soap-envelope"),
            {"VersionMismatch"},
            "1000",
        )
    )
    foreign = build_request()
    etree.SubElement(find(foreign, "soap:Header"), "{urn:x}H").set(f"{{{SOAP11}}}mustUnderstand", "1")
    cases.append((to_bytes(foreign), {"MustUnderstand"}, "1000"))
    cases.append((b"<not xml", {"Client"}, "1000"))
    bad_service = build_request(service="urn:other")
    cases.append((to_bytes(bad_service), {"Client"}, "1000"))
    out = []
    for raw, codes, code in cases:
        with pytest.raises(ItkFault) as caught:
            validate_request(parse_request(raw, settings), settings, allow_list)
        out.append((caught.value, codes, code))
    return out


def test_validation_faults_pass_the_black_box_check() -> None:
    checker = shared_tool("wire_check")
    for fault, codes, code in _faults_from_validation():
        body, _ = fault_response(fault)
        assert checker.check_fault(500, "text/xml; charset=utf-8", body, codes, code) is None, fault


def test_own_message_types_schema_is_in_the_wsdl_folder() -> None:
    folder = schemas.wsdl_dir()
    assert (folder / "itk-message-types.xsd").is_file()
    assert (folder / "itk-distribution-envelope.xsd").is_file()
    assert schemas.wsdl_dir(Settings.from_env({"PEM111_WSDL_DIR": "/elsewhere"})) == Path("/elsewhere")
