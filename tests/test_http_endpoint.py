"""The ITK endpoint over real HTTP: a real ``nhs111 serve`` process per configuration, real requests.

Requests are the reference corpus messages (``../shared/corpus/reference``) with a fresh MessageID, trackingid
and WS-Security timestamp, changed in exactly one place per case. Every rule of wire-contract.md section 4 is
covered: the core and default rules on the default server, the strict profile (B5-B14) and the configured
lists (B13, C14) on a strict server, C17's required addresslist and ``OK:<MessageID>`` on a "quirks" server,
E1 on servers whose allow-list or store is unavailable. E2 and a failed conversion are checked in process, with
real components: causing them takes a defect or bytes no sender can produce.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests
from conftest import REPO, require_shared
from lxml import etree
from server_fixture import RunningServer, corpus_addresses, corpus_requests, free_port, require_corpus, start_server
from werkzeug.test import Client

from adaptor.config import Settings
from adaptor.delivery.forwarders.folder import FolderForwarder
from adaptor.http import server as server_module
from adaptor.http.app import create_app
from adaptor.itk.message import ItkMessage
from adaptor.store import Accepted, AttemptOutcome, MessageStore, Status

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
ITK = "urn:nhs-itk:ns:201005"
HL7 = "urn:hl7-org:v3"
NS = {"s": SOAP11, "a": WSA, "wsse": WSSE, "wsu": WSU, "itk": ITK, "hl7": HL7}

ERROR_CODE_SYSTEM = "2.16.840.1.113883.2.1.3.2.4.17.268"
UPPERCASE_UUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
SOAP_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/soap/fault"
WSA_FAULT_ACTION = "http://www.w3.org/2005/08/addressing/fault"
DMS_ACTION = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0_DMS"
REPORT_ACTION = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"
INTERACTION_KEY = "urn:nhs-itk:ns:201005:interaction"

#: The base of the mutation cases: _DMS action, To, ReplyTo, WS-Security Timestamp and Username, one CDA.
BASE_REQUEST = "primary-emergency-itk-request.xml"
#: A plain SendNHS111Report-v2-0 request.
REPORT_REQUEST = "tpp-ooh-T6-skillset-itk-request.xml"
MAX_REQUEST_BYTES = 1_000_000  # the repeat-caller set (437 KB) fits; oversize cases stay small
FAST_SECONDS = 1.0


# == requests ====================================================================================================


def new_id() -> str:
    return str(uuid.uuid4()).upper()


def load(name: str) -> etree._Element:
    return etree.parse(str(require_corpus() / name)).getroot()


def timestamp(offset_seconds: float = 0) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset_seconds))


def refresh(envelope: etree._Element) -> str:
    """New MessageID and trackingid, a Timestamp valid now; returns the MessageID."""
    message_id = new_id()
    for element in envelope.iterfind("s:Header/a:MessageID", NS):
        element.text = message_id
    for header in envelope.iterfind("s:Body/itk:DistributionEnvelope/itk:header", NS):
        header.set("trackingid", new_id())
    for created in envelope.iterfind("s:Header/wsse:Security/wsu:Timestamp/wsu:Created", NS):
        created.text = timestamp()
    for expires in envelope.iterfind("s:Header/wsse:Security/wsu:Timestamp/wsu:Expires", NS):
        expires.text = timestamp(600)
    return message_id


def to_bytes(envelope: etree._Element) -> bytes:
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def header(envelope: etree._Element, name: str) -> etree._Element | None:
    return envelope.find(f"s:Header/{name}", NS)


def distribution_envelope(envelope: etree._Element) -> etree._Element:
    found = envelope.find("s:Body/itk:DistributionEnvelope", NS)
    assert found is not None
    return found


def itk_header(envelope: etree._Element) -> etree._Element:
    found = distribution_envelope(envelope).find("itk:header", NS)
    assert found is not None
    return found


def manifest_item(envelope: etree._Element) -> etree._Element:
    found = itk_header(envelope).find("itk:manifest/itk:manifestitem", NS)
    assert found is not None
    return found


def clinical_document(envelope: etree._Element) -> etree._Element:
    found = distribution_envelope(envelope).find("itk:payloads/itk:payload/hl7:ClinicalDocument", NS)
    assert found is not None
    return found


def remove(element: etree._Element | None) -> None:
    assert element is not None
    element.getparent().remove(element)


def post(
    url: str,
    body: bytes,
    content_type: str | None = "text/xml; charset=utf-8",
    soap_action: str | None = None,
    **kwargs: object,
) -> requests.Response:
    headers = {}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if soap_action is not None:
        headers["SOAPAction"] = f'"{soap_action}"'
    return requests.post(url, data=body, headers=headers, timeout=30, **kwargs)


# == responses ===================================================================================================


@dataclass(frozen=True)
class Fault:
    faultcode: str  # local part, e.g. "Client"
    error_id: str
    error_code: str
    code_system: str | None
    error_text: str
    diagnostic: str | None
    action: str | None
    message_id: str | None
    relates_to: str | None


def parse_response(response: requests.Response) -> etree._Element:
    assert response.headers["Content-Type"] == "text/xml; charset=utf-8"
    envelope = etree.fromstring(response.content)
    assert envelope.tag == f"{{{SOAP11}}}Envelope"
    return envelope


def fault_of(response: requests.Response) -> Fault:
    assert response.status_code == 500, response.text[:500]
    envelope = parse_response(response)
    fault = envelope.find("s:Body/s:Fault", NS)
    assert fault is not None, response.text[:500]
    faultcode = fault.findtext("faultcode") or ""
    prefix, _, local = faultcode.rpartition(":")
    assert fault.nsmap.get(prefix) == SOAP11, "the faultcode prefix must be bound to SOAP 1.1"
    info = fault.find("detail/itk:ToolkitErrorInfo", NS)
    assert info is not None
    code = info.find("itk:ErrorCode", NS)
    assert code is not None
    return Fault(
        faultcode=local,
        error_id=info.findtext("itk:ErrorID", namespaces=NS) or "",
        error_code=code.text or "",
        code_system=code.get("codeSystem"),
        error_text=info.findtext("itk:ErrorText", namespaces=NS) or "",
        diagnostic=info.findtext("itk:ErrorDiagnosticText", namespaces=NS),
        action=envelope.findtext("s:Header/a:Action", namespaces=NS),
        message_id=envelope.findtext("s:Header/a:MessageID", namespaces=NS),
        relates_to=envelope.findtext("s:Header/a:RelatesTo", namespaces=NS),
    )


def assert_fault(
    response: requests.Response,
    faultcode: str,
    error_code: int,
    error_text: str,
    *,
    relates_to: str | None = None,
    diagnostic: str | None = None,
) -> Fault:
    """The response is the fault; ``error_text`` ending in ``*`` matches as a prefix."""
    fault = fault_of(response)
    assert (fault.faultcode, fault.error_code) == (faultcode, str(error_code)), fault
    if error_text.endswith("*"):
        assert fault.error_text.startswith(error_text[:-1]), fault
    else:
        assert fault.error_text == error_text, fault
    if diagnostic is not None:
        assert fault.diagnostic == diagnostic, fault
    assert UPPERCASE_UUID.match(fault.error_id), fault
    assert UPPERCASE_UUID.match(fault.message_id or ""), fault
    assert fault.code_system == ERROR_CODE_SYSTEM
    expected_action = WSA_FAULT_ACTION if faultcode == "MustUnderstand" else SOAP_FAULT_ACTION
    assert fault.action == expected_action
    assert fault.relates_to == relates_to, fault
    return fault


def assert_ok(response: requests.Response, request: etree._Element, ok_text: str = "OK") -> etree._Element:
    """HTTP 200 with the success envelope for ``request`` (wire-contract.md section 5.1)."""
    assert response.status_code == 200, response.text[:1000]
    envelope = parse_response(response)
    request_id = request.findtext("s:Header/a:MessageID", namespaces=NS)
    request_action = request.findtext("s:Header/a:Action", namespaces=NS)
    message_id = envelope.findtext("s:Header/a:MessageID", namespaces=NS) or ""
    assert UPPERCASE_UUID.match(message_id) and message_id != request_id
    assert envelope.findtext("s:Header/a:Action", namespaces=NS) == request_action.strip() + "Response"
    assert envelope.findtext("s:Header/a:RelatesTo", namespaces=NS) == request_id
    assert envelope.find("s:Header/a:To", NS) is None
    body = envelope.find("s:Body", NS)
    assert [child.tag for child in body] == [f"{{{ITK}}}SimpleMessageResponse"]
    assert body[0].text == ok_text
    message_types = etree.XMLSchema(etree.parse(str(REPO / "wsdl" / "itk-message-types.xsd")))
    message_types.assertValid(copy.deepcopy(body[0]))
    return envelope


# == servers =====================================================================================================


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Default profile, the corpus allow-list, schema pack when available, a 1 MB size limit."""
    running = start_server(tmp_path_factory.mktemp("default"), PEM111_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Strict profile; wsa:To must be the server's URL; Username ``Unknown`` denied; corpus senders only."""
    port = free_port()
    running = start_server(
        tmp_path_factory.mktemp("strict"),
        port=port,
        PEM111_SOAP_VALIDATION_ENABLED="true",
        PEM111_SOAP_SEND_TO=f"http://127.0.0.1:{port}/report",
        PEM111_USERNAME_DENY_LIST="Unknown",
        PEM111_ITK_SENDER_ODS_LIST=",".join(corpus_addresses().senders),
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def quirks_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """``OK:<MessageID>``, messages without an addresslist allowed, and a delivery folder that cannot be created."""
    folder = tmp_path_factory.mktemp("quirks")
    blocker = folder / "not-a-folder"
    blocker.write_text("a file where the outbox folder should be")
    running = start_server(
        folder,
        PEM111_OK_WITH_MESSAGE_ID="true",
        PEM111_ITK_REQUIRE_ADDRESSLIST="false",
        PEM111_FORWARD_TARGET=f"dir:{blocker / 'outbox'}",
    )
    yield running
    running.stop()


def fresh_request(name: str = BASE_REQUEST, *, to: str | None = None) -> tuple[etree._Element, str]:
    envelope = load(name)
    message_id = refresh(envelope)
    if to is not None:
        to_element = header(envelope, "a:To")
        assert to_element is not None
        to_element.text = to
    return envelope, message_id


# == valid messages ==============================================================================================


def test_every_corpus_request_is_accepted_and_delivered(server: RunningServer) -> None:
    accepted = []
    for path in corpus_requests():
        envelope, message_id = fresh_request(path.name)
        action = envelope.findtext("s:Header/a:Action", namespaces=NS)

        response = post(server.report_url, to_bytes(envelope), soap_action=action)

        assert_ok(response, envelope)
        accepted.append((path, message_id))
    for path, message_id in accepted:
        server.wait_for_status(message_id)
        delivered = server.outbox / f"{message_id}.json"
        assert delivered.is_file(), path.name
        bundle = json.loads(delivered.read_text(encoding="utf-8"))
        assert bundle["resourceType"] == "Bundle"
        assert message_id in delivered.read_text(encoding="utf-8")


def test_success_action_follows_the_request_action(server: RunningServer) -> None:
    for name, action in ((BASE_REQUEST, DMS_ACTION), (REPORT_REQUEST, REPORT_ACTION)):
        envelope, _ = fresh_request(name)
        assert envelope.findtext("s:Header/a:Action", namespaces=NS) == action

        response = assert_ok(post(server.report_url, to_bytes(envelope)), envelope)

        assert response.findtext("s:Header/a:Action", namespaces=NS) == action + "Response"


def test_accepted_message_is_stored_with_its_envelope_facts(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    tracking_id = itk_header(envelope).get("trackingid")

    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)

    [stored] = server.wait_for_status(message_id)
    assert stored.tracking_id == tracking_id
    assert stored.status is Status.DELIVERED
    assert stored.service == DMS_ACTION
    assert stored.ods_codes == ("EM396",)
    assert stored.sender == "urn:nhs-uk:identity:ods:5L399"
    assert stored.raw == to_bytes(envelope)
    assert stored.bundle is not None and json.loads(stored.bundle)["resourceType"] == "Bundle"


def test_c17_message_without_addresslist_is_refused_by_default(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    remove(itk_header(envelope).find("itk:addresslist", NS))
    response = post(server.report_url, to_bytes(envelope))
    assert_fault(response, "Client", 1000, "Message rejected", relates_to=message_id)


def test_soap_action_header_may_differ_or_be_missing(server: RunningServer) -> None:
    for soap_action in (None, "", "urn:something:else"):
        envelope, _ = fresh_request()
        assert_ok(post(server.report_url, to_bytes(envelope), soap_action=soap_action), envelope)


# == resends (section 5.3) =======================================================================================


def stored_records(server: RunningServer, message_id: str) -> list[str]:
    return [m.id for m in server.stored(message_id)]


def delivered_files(server: RunningServer, message_id: str) -> list[Path]:
    return [p for p in server.outbox_files() if message_id.encode() in p.read_bytes()]


def test_identical_resend_is_accepted_stored_once_and_delivered_once(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    raw = to_bytes(envelope)

    responses = [post(server.report_url, raw) for _ in range(3)]

    answer_ids = {assert_ok(r, envelope).findtext("s:Header/a:MessageID", namespaces=NS) for r in responses}
    assert len(answer_ids) == 3  # a new MessageID in every answer
    server.wait_for_status(message_id)  # delivered: nothing sends it again after this
    assert len(stored_records(server, message_id)) == 1
    assert [p.name for p in delivered_files(server, message_id)] == [f"{message_id}.json"]


def test_resend_with_new_soap_header_is_the_same_message(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)

    created = envelope.find("s:Header/wsse:Security/wsu:Timestamp/wsu:Created", NS)
    created.text = timestamp(5)
    header(envelope, "a:To").text = "https://a.different.host.example/report"
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)

    server.wait_for_status(message_id)
    assert len(stored_records(server, message_id)) == 1
    assert len(delivered_files(server, message_id)) == 1


def test_reused_message_id_with_new_content_is_a_new_message(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)

    itk_header(envelope).set("trackingid", new_id())
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)

    server.wait_for_status(message_id, records=2)
    first, second = stored_records(server, message_id)  # oldest first
    assert first != second
    names = sorted(p.name for p in delivered_files(server, message_id))
    # Whichever is delivered first (two delivery threads may take both at once) keeps the plain name; the other
    # must not overwrite it and is named after its record.
    assert names in (
        sorted([f"{message_id}.json", f"{message_id}-{second[:8]}.json"]),
        sorted([f"{message_id}.json", f"{message_id}-{first[:8]}.json"]),
    )


def test_concurrent_identical_resends_are_stored_once(server: RunningServer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    envelope, message_id = fresh_request()
    raw = to_bytes(envelope)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: post(server.report_url, raw), range(6)))

    for response in responses:
        assert_ok(response, envelope)
    server.wait_for_status(message_id)
    assert len(stored_records(server, message_id)) == 1
    assert len(delivered_files(server, message_id)) == 1


# == routing: 404, 405, 415, media types (section 1) =============================================================


def test_unknown_paths_are_404(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    assert requests.get(f"{server.base_url}/nothing-here", timeout=10).status_code == 404
    assert post(f"{server.base_url}/reports", to_bytes(envelope)).status_code == 404
    assert post(f"{server.base_url}/report/", to_bytes(envelope)).status_code == 404


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_on_the_report_path_are_405(server: RunningServer, method: str) -> None:
    response = requests.request(method, server.report_url, timeout=10)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x", "text/html"]
)
def test_other_media_types_are_415(server: RunningServer, content_type: str) -> None:
    envelope, _ = fresh_request()
    assert post(server.report_url, to_bytes(envelope), content_type=content_type).status_code == 415


@pytest.mark.parametrize(
    "content_type",
    ["text/xml", "text/xml; charset=utf-8", "TEXT/XML;charset=UTF-8", "application/xml", "application/soap+xml", None],
)
def test_accepted_media_types(server: RunningServer, content_type: str | None) -> None:
    envelope, _ = fresh_request()
    assert_ok(post(server.report_url, to_bytes(envelope), content_type=content_type), envelope)


def test_soap12_envelope_sent_as_soap_xml_is_a_version_mismatch(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    raw = to_bytes(envelope).replace(SOAP11.encode(), SOAP12.encode())

    response = post(server.report_url, raw, content_type="application/soap+xml; charset=utf-8")

    assert_fault(response, "VersionMismatch", 1000, "SOAP version mismatch", relates_to=message_id)


def test_chunked_request_is_accepted(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    raw = to_bytes(envelope)
    chunks = (raw[i : i + 16384] for i in range(0, len(raw), 16384))  # a generator: sent chunked

    assert_ok(post(server.report_url, chunks), envelope)  # type: ignore[arg-type]


def test_health_check(server: RunningServer) -> None:
    response = requests.get(f"{server.base_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_wsdl_is_addressed_to_the_configured_endpoint_url(server: RunningServer) -> None:
    for query in ("wsdl", "WSDL"):
        wsdl_url = f"{server.report_url}?{query}"
        response = requests.get(wsdl_url, timeout=10)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/xml")
        wsdl = etree.fromstring(response.content)
        location = wsdl.find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address").get("location")
        assert location == "http://localhost:8080/report"  # the first PEM111_SOAP_SEND_TO, by default
        # Schema references are relative: they resolve against wherever the WSDL was fetched from.
        includes = [e.get("schemaLocation") for e in wsdl.iter("{http://www.w3.org/2001/XMLSchema}include")]
        assert includes == ["?xsd=itk-distribution-envelope.xsd", "?xsd=itk-message-types.xsd"]
        for include in includes:
            assert urljoin(wsdl_url, include) == f"{server.report_url}{include}"
            schema = requests.get(urljoin(wsdl_url, include), timeout=10)
            assert schema.status_code == 200
            etree.XMLSchema(etree.fromstring(schema.content))


def test_wsdl_never_echoes_the_host_header(server: RunningServer, strict_server: RunningServer) -> None:
    plain = requests.get(f"{server.report_url}?wsdl", timeout=10).content
    for host in ("evil.example", "itk.example.test:8443"):
        forged = requests.get(f"{server.report_url}?wsdl", headers={"Host": host}, timeout=10)
        assert forged.status_code == 200 and forged.content == plain
        schema = requests.get(f"{server.report_url}?xsd=itk-message-types.xsd", headers={"Host": host}, timeout=10)
        assert host.encode() not in schema.content
    configured = requests.get(f"{strict_server.report_url}?wsdl", headers={"Host": "evil.example"}, timeout=10)
    location = etree.fromstring(configured.content).find(".//{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert location.get("location") == strict_server.env["PEM111_SOAP_SEND_TO"]
    assert b"evil.example" not in configured.content


def test_only_the_wsdl_schemas_are_served(server: RunningServer) -> None:
    for name in ("nothing.xsd", "../wsdl/itk-message-types.xsd", "../../setup.cfg", "SendNHS111Report-v2-0.wsdl"):
        assert requests.get(server.report_url, params={"xsd": name}, timeout=10).status_code == 404


# == rules A1-A5: the request and the SOAP envelope ==============================================================


def test_a1_oversized_body_is_refused_unread(server: RunningServer) -> None:
    body = b"<x>" + b"A" * (MAX_REQUEST_BYTES + 1000) + b"</x>"

    assert_fault(post(server.report_url, body), "Client", 1000, "Message too large")
    chunked = (body[i : i + 65536] for i in range(0, len(body), 65536))
    assert_fault(post(server.report_url, chunked), "Client", 1000, "Message too large")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body",
    [b"", b"   \n", b"<s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>", b"\x00\x01binary"],
    ids=["empty", "blank", "truncated", "binary"],
)
def test_a2_not_xml(server: RunningServer, body: bytes) -> None:
    assert_fault(post(server.report_url, body), "Client", 1000, "This is not a valid XML message")


def test_a2_doctype_with_external_entity_is_refused_fast(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    text = to_bytes(envelope).decode("utf-8").split("?>", 1)[1]
    text = re.sub(r"(<a:MessageID>)", r"\1&xxe;", text, count=1)
    raw = f'<?xml version="1.0"?>\n<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>{text}'.encode()
    assert b"&xxe;" in raw

    started = time.perf_counter()
    response = post(server.report_url, raw)

    assert time.perf_counter() - started < FAST_SECONDS
    assert_fault(response, "Client", 1000, "This is not a valid XML message")
    assert b"root:" not in response.content


def test_a2_utf16_doctype_naming_a_fifo_is_refused_fast(server: RunningServer, tmp_path: Path) -> None:
    """libxml2 must not open the external subset: a FIFO nobody writes to would hold the request."""
    fifo = tmp_path / "subset.dtd"
    os.mkfifo(fifo)
    envelope, _ = fresh_request()
    text = to_bytes(envelope).decode("utf-8").split("?>", 1)[1]
    raw = f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE x SYSTEM "{fifo}">{text}'.encode("utf-16")

    started = time.perf_counter()
    response = post(server.report_url, raw, content_type="text/xml; charset=utf-16")

    assert time.perf_counter() - started < FAST_SECONDS
    assert_fault(
        response,
        "Client",
        1000,
        "This is not a valid XML message",
        diagnostic="a document type declaration (DOCTYPE) is not allowed in a SOAP message",
    )


def test_a2_billion_laughs_is_refused_fast(server: RunningServer) -> None:
    entities = '<!ENTITY l0 "lol">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    raw = (
        f'<?xml version="1.0"?><!DOCTYPE s:Envelope [{entities}]>'
        f'<s:Envelope xmlns:s="{SOAP11}"><s:Body><x>&l9;</x></s:Body></s:Envelope>'
    ).encode()

    started = time.perf_counter()
    response = post(server.report_url, raw)

    assert time.perf_counter() - started < FAST_SECONDS
    assert_fault(response, "Client", 1000, "This is not a valid XML message")


def test_a3_soap12_envelope(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    raw = to_bytes(envelope).replace(SOAP11.encode(), SOAP12.encode())

    assert_fault(post(server.report_url, raw), "VersionMismatch", 1000, "SOAP version mismatch", relates_to=message_id)


def test_a4_not_a_soap_envelope(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    assert_fault(
        post(server.report_url, etree.tostring(distribution_envelope(envelope))),
        "Client",
        1000,
        "DistributionEnvelope missing",
    )
    remove(envelope.find("s:Body", NS))
    assert_fault(
        post(server.report_url, to_bytes(envelope)),
        "Client",
        1000,
        "DistributionEnvelope missing",
        relates_to=envelope.findtext("s:Header/a:MessageID", namespaces=NS),
    )


def test_a5_foreign_must_understand_header(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    foreign = etree.SubElement(envelope.find("s:Header", NS), "{urn:example:local}LocalHeaderElement")
    foreign.set(f"{{{SOAP11}}}mustUnderstand", "1")

    fault = assert_fault(
        post(server.report_url, to_bytes(envelope)),
        "MustUnderstand",
        1000,
        "Rejecting foreign header",
        relates_to=message_id,
    )
    assert "LocalHeaderElement" in (fault.diagnostic or "")


def test_a5_must_understand_on_understood_headers_is_fine(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    for name in ("a:MessageID", "a:Action", "a:To", "wsse:Security"):
        header(envelope, name).set(f"{{{SOAP11}}}mustUnderstand", "1")

    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)


# == rules B1-B4 (core and default) ==============================================================================


def test_b1_message_id_missing_or_empty(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    header(envelope, "a:MessageID").text = "  "
    assert_fault(post(server.report_url, to_bytes(envelope)), "Client", 1000, "MessageId missing")
    remove(header(envelope, "a:MessageID"))
    assert_fault(post(server.report_url, to_bytes(envelope)), "Client", 1000, "MessageId missing")


def test_b2_action_missing(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    remove(header(envelope, "a:Action"))
    response = post(server.report_url, to_bytes(envelope))
    assert_fault(response, "Client", 1000, "Action node missing", relates_to=message_id)


def test_b3_to_not_an_absolute_uri(server: RunningServer) -> None:
    envelope, message_id = fresh_request(to="http//:this.is.invalid/address")
    response = post(server.report_url, to_bytes(envelope))
    assert_fault(
        response, "Client", 1000, "Invalid Send To value: http//:this.is.invalid/address", relates_to=message_id
    )


def test_b3_any_absolute_to_is_fine_by_default(server: RunningServer) -> None:
    envelope, _ = fresh_request(to="https://another.host.example/NHS111Reportv20.svc")
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)


def test_b4_reply_to_not_anonymous(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    envelope.find("s:Header/a:ReplyTo/a:Address", NS).text = "http://www.w3.org/2005/08/addressing/NOTanonymous"
    response = post(server.report_url, to_bytes(envelope))
    assert_fault(
        response,
        "Client",
        1000,
        "Invalid ReplyTo: http://www.w3.org/2005/08/addressing/NOTanonymous",
        relates_to=message_id,
    )


def test_strict_rules_are_off_by_default(server: RunningServer) -> None:
    envelope, _ = fresh_request()
    remove(header(envelope, "a:To"))
    remove(header(envelope, "wsse:Security"))
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)


# == rules C1-C18: the Distribution Envelope ====================================================================

Mutation = Callable[[etree._Element], None]


def _set_header(name: str, value: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        if value is None:
            del itk_header(envelope).attrib[name]
        else:
            itk_header(envelope).set(name, value)

    return mutate


def _replace_body(envelope: etree._Element) -> None:
    body = envelope.find("s:Body", NS)
    for child in list(body):
        body.remove(child)
    etree.SubElement(body, "{urn:example}Other").text = "x"


def _counts(manifest: int, payloads: int) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        itk_header(envelope).find("itk:manifest", NS).set("count", str(manifest))
        distribution_envelope(envelope).find("itk:payloads", NS).set("count", str(payloads))

    return mutate


def _remove_payload_id(envelope: etree._Element) -> None:
    del distribution_envelope(envelope).find("itk:payloads/itk:payload", NS).attrib["id"]


def _manifest_attribute(name: str, value: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        if value is None:
            del manifest_item(envelope).attrib[name]
        else:
            manifest_item(envelope).set(name, value)

    return mutate


def _audit_identity(uri: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        if uri is None:
            remove(itk_header(envelope).find("itk:auditIdentity", NS))
        else:
            itk_header(envelope).find("itk:auditIdentity/itk:id", NS).set("uri", uri)

    return mutate


def _interaction(value: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        for spec in itk_header(envelope).iterfind("itk:handlingSpecification/itk:spec", NS):
            if spec.get("key") == INTERACTION_KEY:
                if value is None:
                    remove(spec)
                else:
                    spec.set("value", value)

    return mutate


def _unknown_addresses(envelope: etree._Element) -> None:
    address_list = itk_header(envelope).find("itk:addresslist", NS)
    for address in list(address_list):
        address_list.remove(address)
    etree.SubElement(address_list, f"{{{ITK}}}address", uri="urn:nhs-uk:addressing:ods:ZZZ99")
    etree.SubElement(address_list, f"{{{ITK}}}address", uri="999999999", type="2.16.840.1.113883.2.1.3.2.4.18.44")


def _break_schema(envelope: etree._Element) -> None:
    etree.SubElement(itk_header(envelope), f"{{{ITK}}}breakSchema").text = "x"


def _undecodable_payload(envelope: etree._Element) -> None:
    manifest_item(envelope).set("base64", "true")
    payload = distribution_envelope(envelope).find("itk:payloads/itk:payload", NS)
    for child in list(payload):
        payload.remove(child)
    payload.text = "this is %%% not base64"


def _no_clinical_document(envelope: etree._Element) -> None:
    payload = distribution_envelope(envelope).find("itk:payloads/itk:payload", NS)
    for child in list(payload):
        payload.remove(child)
    payload.text = "nothing here"


def _effective_time(value: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        effective_time = clinical_document(envelope).find("hl7:effectiveTime", NS)
        if value is None:
            del effective_time.attrib["value"]
        else:
            effective_time.set("value", value)

    return mutate


def _cda_schema_violation(envelope: etree._Element) -> None:
    clinical_document(envelope).insert(0, etree.Element(f"{{{HL7}}}notInTheSchema"))


# (rule, mutation, faultcode, ErrorCode, ErrorText; a trailing * matches a prefix, diagnostic or None)
DISTRIBUTION_ENVELOPE_CASES: list[tuple[str, Mutation, int, str, str | None]] = [
    ("C1", _replace_body, 1000, "DistributionEnvelope missing", None),
    ("C2", _set_header("trackingid", None), 1000, "Itk TrackingId missing", None),
    ("C2-empty", _set_header("trackingid", ""), 1000, "Itk TrackingId missing", None),
    (
        "C3",
        _set_header("service", "urn:nhs-itk:services:201005:SomethingElse-v1-0"),
        1000,
        "Soap Action is not equal to ITK service",
        None,
    ),
    ("C4", _counts(1, 2), 1000, "Manifest count and payload count don't match", None),
    ("C5", _counts(2, 2), 1000, "Manifest count attribute and manifest items size don't match", None),
    ("C7", _remove_payload_id, 1000, "Payload id missing", None),
    ("C8", _manifest_attribute("id", "uuid_" + new_id()), 1000, "Manifest and payload items IDs don't match", None),
    ("C9", _manifest_attribute("profileid", None), 1000, "Manifest profile Id missing", None),
    ("C10-empty", _manifest_attribute("profileid", ""), 1000, "Invalid manifest profile Id:", None),
    (
        "C10-invalid",
        _manifest_attribute("profileid", "urn:nhs-en:profile:invalid"),
        1000,
        "Invalid manifest profile Id: urn:nhs-en:profile:invalid",
        None,
    ),
    ("C11", _manifest_attribute("encrypted", "true"), 1000, "Encrypted payloads are not supported", None),
    ("C12", _audit_identity(None), 1000, "Audit Identity missing", None),
    (
        "C13",
        _audit_identity("urn:nhs-uk:identity:INVALID"),
        1000,
        "Invalid Audit Identity value: urn:nhs-uk:identity:INVALID",
        None,
    ),
    ("C15", _interaction(None), 1000, "Interaction missing", None),
    (
        "C16",
        _interaction("urn:nhs-itk:interaction:unknownThing-v9-9"),
        1000,
        "Unsupported interaction: urn:nhs-itk:interaction:unknownThing-v9-9",
        None,
    ),
    (
        "C16-ambulance",
        _interaction("urn:nhs-itk:interaction:primaryRequestforAmbulanceDispatch-v2-0"),
        1000,
        "Unsupported interaction: *",
        None,
    ),
    (
        "C17",
        _unknown_addresses,
        1000,
        "Message rejected",
        "Both ODS code (ZZZ99) and DOS ID (999999999) are invalid",
    ),
    ("C18", _break_schema, 1000, "schema validation failed", None),
    ("D1", _undecodable_payload, 1000, "Payload could not be decoded", None),
    ("D2", _no_clinical_document, 1000, "Unable to find ClinicalDocument element", "ClinicalDocument missing"),
    ("D3-missing", _effective_time(None), 1000, "Invalid ClinicalDocument effectiveTime", None),
    ("D3-invalid", _effective_time("20201301"), 1000, "Invalid ClinicalDocument effectiveTime", None),
    ("D4", _cda_schema_violation, 1000, "schema validation failed", None),
]


@pytest.mark.parametrize(
    ("rule", "mutate", "error_code", "error_text", "diagnostic"),
    DISTRIBUTION_ENVELOPE_CASES,
    ids=[case[0] for case in DISTRIBUTION_ENVELOPE_CASES],
)
def test_distribution_envelope_rules(
    server: RunningServer, rule: str, mutate: Mutation, error_code: int, error_text: str, diagnostic: str | None
) -> None:
    if rule == "D4":
        require_shared("schemas", "iuc")  # D4 runs only with the published schema pack
        assert "PEM111_SCHEMA_DIR" in server.env
    envelope, message_id = fresh_request()
    mutate(envelope)

    assert_fault(
        post(server.report_url, to_bytes(envelope)),
        "Client",
        error_code,
        error_text,
        relates_to=message_id,
        diagnostic=diagnostic,
    )


def test_c6_payload_count_attribute_wrong(server: RunningServer) -> None:
    # C4 and C5 hold (manifest 2 = payloads 2, two manifest items) but there is one payload.
    envelope, message_id = fresh_request()
    items = itk_header(envelope).find("itk:manifest", NS)
    extra = copy.deepcopy(manifest_item(envelope))
    extra.set("id", "uuid_" + new_id())
    items.append(extra)
    _counts(2, 2)(envelope)

    assert_fault(
        post(server.report_url, to_bytes(envelope)),
        "Client",
        1000,
        "Payload count attribute and payload items size don't match",
        relates_to=message_id,
    )


def test_rejected_messages_are_neither_stored_nor_delivered(server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    _break_schema(envelope)
    fault_of(post(server.report_url, to_bytes(envelope)))
    assert stored_records(server, message_id) == []
    assert delivered_files(server, message_id) == []


# == strict profile: B5-B14 and the configured lists =============================================================


def strict_request(server: RunningServer, name: str = BASE_REQUEST) -> tuple[etree._Element, str]:
    return fresh_request(name, to=server.report_url)


def test_strict_valid_request_is_accepted(strict_server: RunningServer) -> None:
    envelope, _ = strict_request(strict_server)
    assert_ok(post(strict_server.report_url, to_bytes(envelope)), envelope)


def _security(envelope: etree._Element, path: str) -> etree._Element:
    found = envelope.find(f"s:Header/wsse:Security/{path}", NS)
    assert found is not None
    return found


def _strict_to(value: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        if value is None:
            remove(header(envelope, "a:To"))
        else:
            header(envelope, "a:To").text = value

    return mutate


def _timestamp_values(created: str | None, expires: str | None) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        for name, value in (("wsu:Created", created), ("wsu:Expires", expires)):
            element = _security(envelope, f"wsu:Timestamp/{name}")
            if value is None:
                remove(element)
            else:
                element.text = value

    return mutate


def _remove_security(path: str) -> Mutation:
    return lambda envelope: remove(_security(envelope, path))


def _username(value: str) -> Mutation:
    def mutate(envelope: etree._Element) -> None:
        _security(envelope, "wsse:UsernameToken/wsse:Username").text = value

    return mutate


STRICT_CASES: list[tuple[str, Mutation, int, str]] = [
    ("B5", _strict_to(None), 1000, "Send To missing"),
    ("B6", _strict_to("https://another.host.example/report"), 1000, "Invalid Send To value: *"),
    ("B3-strict", _strict_to("http//:this.is.invalid/address"), 1000, "Invalid Send To value: *"),
    ("B7", _remove_security("wsu:Timestamp"), 1000, "Timestamp missing"),
    ("B8-created", _timestamp_values("yesterday", timestamp(600)), 1000, "Invalid timestamp"),
    ("B8-expires-missing", _timestamp_values(timestamp(), None), 1000, "Invalid timestamp"),
    ("B9", _timestamp_values(timestamp(120), timestamp(60)), 1000, "Invalid timestamp"),
    ("B10", _timestamp_values("2020-01-01T10:00:00Z", "2020-01-01T10:10:00Z"), 1000, "Timestamp expired"),
    ("B11", _timestamp_values(timestamp(3600), timestamp(4200)), 1000, "Timestamp not yet valid"),
    ("B12", _remove_security("wsse:UsernameToken"), 3000, "Username missing"),
    ("B12-empty", _username("  "), 3000, "Username missing"),
    ("B13", _username("Unknown"), 3000, "Username not authorised"),
    ("B14", _manifest_attribute("mimetype", ""), 1000, "Blank attribute: *"),
    ("C14", _audit_identity("urn:nhs-uk:identity:ods:ZZZ99"), 1000, "Invalid Audit Identity value: *"),
]


@pytest.mark.parametrize(
    ("rule", "mutate", "error_code", "error_text"), STRICT_CASES, ids=[case[0] for case in STRICT_CASES]
)
def test_strict_rules(
    strict_server: RunningServer, rule: str, mutate: Mutation, error_code: int, error_text: str
) -> None:
    envelope, message_id = strict_request(strict_server)
    mutate(envelope)

    assert_fault(
        post(strict_server.report_url, to_bytes(envelope)), "Client", error_code, error_text, relates_to=message_id
    )


def test_strict_timestamp_within_skew_is_accepted(strict_server: RunningServer) -> None:
    envelope, _ = strict_request(strict_server)
    _timestamp_values(timestamp(-900), timestamp(-60))(envelope)  # expired a minute ago: within 300 s skew
    assert_ok(post(strict_server.report_url, to_bytes(envelope)), envelope)


# == configuration quirks: OK:<MessageID>, no addresslist allowed, delivery failure ============================


def test_ok_with_message_id(quirks_server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    assert_ok(post(quirks_server.report_url, to_bytes(envelope)), envelope, ok_text=f"OK:{message_id}")


def test_message_without_addresslist_is_accepted_when_allowed(quirks_server: RunningServer) -> None:
    envelope, message_id = fresh_request()
    remove(itk_header(envelope).find("itk:addresslist", NS))
    response = post(quirks_server.report_url, to_bytes(envelope))
    assert_ok(response, envelope, ok_text=f"OK:{message_id}")


def test_failed_delivery_is_recorded_and_the_sender_still_gets_ok(quirks_server: RunningServer) -> None:
    """Async mode: OK once stored; the failed attempt is recorded and the message waits for its retry."""
    envelope, message_id = fresh_request()

    assert_ok(post(quirks_server.report_url, to_bytes(envelope)), envelope, ok_text=f"OK:{message_id}")

    [stored] = quirks_server.wait_for_status(message_id, Status.RETRYING)
    store = MessageStore(quirks_server.database_url)
    try:
        history = store.delivery_history(stored.id)
    finally:
        store.close()
    assert stored.status_reason and stored.attempts >= 1
    assert stored.next_attempt_at > stored.received_at
    assert stored.bundle is not None  # converted once: every retry sends the same bytes
    assert history and all(attempt.outcome is AttemptOutcome.FAILED for attempt in history)


# == E1: transient failures answer 2100 ==========================================================================


def test_e1_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    running = start_server(tmp_path / "server", PEM111_DATABASE_URL=f"sqlite:///{blocker / 'messages.db'}")
    try:
        assert requests.get(f"{running.base_url}/healthz", timeout=10).status_code == 200
        envelope, message_id = fresh_request()

        response = post(running.report_url, to_bytes(envelope))

        assert_fault(response, "Server", 2100, "Temporary processing error, please retry", relates_to=message_id)
        assert running.outbox_files() == []
        assert "message store unavailable at start-up" in running.log_text()
    finally:
        running.stop()


def test_e1_allow_list_not_loaded_yet(tmp_path: Path) -> None:
    running = start_server(
        tmp_path,
        PEM111_ITK_ODS_CODE_LIST="",
        PEM111_ITK_DOS_ID_LIST="",
        PEM111_ITK_EXTERNAL_CONFIGURATION_URL=f"http://127.0.0.1:{free_port()}/allow-list.json",
    )
    try:
        envelope, message_id = fresh_request()
        response = post(running.report_url, to_bytes(envelope))
        assert_fault(response, "Server", 2100, "Temporary processing error, please retry", relates_to=message_id)
    finally:
        running.stop()


# == E2: an unexpected error (in process: it takes a defect to cause one) =======================================


class DefectiveStore(MessageStore):
    """A real store with a programming error in ``accept_message`` (what the request path calls)."""

    def accept_message(self, message: ItkMessage, raw: bytes, *args: object, **claim: object) -> Accepted:
        raise ZeroDivisionError("a defect that must not reach the sender: patient Jane Doe")


def test_e2_unexpected_error_is_a_2200_fault_without_details(tmp_path: Path) -> None:
    settings = Settings(itk_ods_code_list=corpus_addresses().ods_codes, data_dir=str(tmp_path))
    store = DefectiveStore(settings.resolved_database_url)
    app = create_app(settings, store=store, forwarder=FolderForwarder(tmp_path / "outbox"))
    envelope, message_id = fresh_request()
    try:
        response = Client(app).post("/report", data=to_bytes(envelope), content_type="text/xml; charset=utf-8")
    finally:
        app.close()
        store.close()

    assert response.status_code == 500
    fault = fault_of(_as_requests_response(response))
    assert (fault.faultcode, fault.error_code) == ("Server", "2200")
    assert fault.error_text == "Internal Error. Please contact your system Administrator"
    assert fault.diagnostic == f"Internal Error {fault.error_id}"
    assert fault.relates_to == message_id
    assert b"Jane Doe" not in response.data and b"ZeroDivisionError" not in response.data
    assert b"Traceback" not in response.data


def _as_requests_response(response: object) -> requests.Response:
    converted = requests.Response()
    converted.status_code = response.status_code  # type: ignore[attr-defined]
    converted.headers.update(dict(response.headers))  # type: ignore[attr-defined]
    converted._content = response.data  # type: ignore[attr-defined]
    return converted


# == the process =================================================================================================


def test_logs_carry_no_patient_data_and_spyne_is_silent(server: RunningServer) -> None:
    document = clinical_document(load(BASE_REQUEST))
    patient = document.find("hl7:recordTarget/hl7:patientRole", NS)
    sensitive = [line.text for line in patient.iterfind("hl7:addr/hl7:streetAddressLine", NS)]
    sensitive += [i.get("extension") for i in patient.iterfind("hl7:id", NS)]
    envelope, _ = fresh_request()
    assert_ok(post(server.report_url, to_bytes(envelope)), envelope)
    _cda_schema_violation(envelope)
    refresh(envelope)
    fault_of(post(server.report_url, to_bytes(envelope)))

    log = server.log_text()
    assert sensitive and not [value for value in sensitive if value and value in log]
    assert " spyne" not in log
    assert "Traceback" not in log


def test_clean_shutdown_and_one_allow_list_warning(tmp_path: Path) -> None:
    running = start_server(
        tmp_path, PEM111_ITK_ODS_CODE_LIST="", PEM111_ITK_DOS_ID_LIST="", PEM111_ITK_ACCEPT_ANY_ADDRESS="true"
    )
    for _ in range(3):
        envelope, _ = fresh_request()
        assert_ok(post(running.report_url, to_bytes(envelope)), envelope)

    assert running.stop(timeout=15) == 0

    log = running.log_text()
    assert log.count("no addressing allow-list") == 1  # at start-up, not per message
    assert f"listening on http://127.0.0.1:{running.port}/report" in log
    assert "received SIGTERM" in log and json.loads(log.splitlines()[-1])["event"] == "stopped"


# == a client that stalls mid-body ===============================================================================


class _StallingBody:
    """A request body that times out as the server's socket would when the client stops sending."""

    def read(self, size: int = -1) -> bytes:
        raise TimeoutError("timed out")


def _assert_logged_as_a_client_timeout(caplog: pytest.LogCaptureFixture) -> None:
    [line] = [r for r in caplog.records if r.getMessage().startswith("client timeout")]
    assert line.levelno == logging.WARNING and line.name == "adaptor.web"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    [answered] = [r for r in caplog.records if r.getMessage() == "request answered"]
    assert answered.status == 408 and answered.outcome == "refused"  # type: ignore[attr-defined]


def test_a_body_that_times_out_is_a_408_not_a_2200(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(itk_ods_code_list=corpus_addresses().ods_codes, data_dir=str(tmp_path), delivery_workers=0)
    app = create_app(settings, forwarder=FolderForwarder(tmp_path / "outbox"))
    envelope, _ = fresh_request()
    body = to_bytes(envelope)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/report",
        "CONTENT_TYPE": "text/xml; charset=utf-8",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": _StallingBody(),
    }
    statuses: list[str] = []
    try:
        answer = b"".join(app(environ, lambda status, headers, exc_info=None: statuses.append(status)))
        assert statuses == ["408 Request Timeout"] and answer == b"The request body did not arrive in time\n"
        assert app.components.store.count_rejections() == 0  # no fault recorded
        assert 'error_code="2200"' not in app.metrics.exposition().decode()
    finally:
        app.close()
    _assert_logged_as_a_client_timeout(caplog)


def test_a_client_that_stalls_mid_body_gets_a_408(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The front door's own body timeout: a 408 and the connection closed, logged as the client's doing; the
    application never sees the request."""
    caplog.set_level(logging.INFO)
    settings = Settings(
        host="127.0.0.1",
        port=0,
        itk_ods_code_list=corpus_addresses().ods_codes,
        data_dir=str(tmp_path),
        delivery_workers=0,
        server_body_timeout_seconds=1.0,
    )
    app = create_app(settings, forwarder=FolderForwarder(tmp_path / "outbox"))
    http_server = server_module.HttpServer(settings, app)
    http_server.start()
    envelope, _ = fresh_request()
    body = to_bytes(envelope)
    try:
        host, port = http_server.address
        with socket.create_connection((host, port), timeout=10) as client:
            head = (
                f"POST /report HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: text/xml; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            client.sendall(head.encode("ascii") + body[: len(body) // 2])  # then nothing more
            started = time.monotonic()
            answer = b""
            while chunk := client.recv(65536):
                answer += chunk
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"Connection: close" in answer
        assert waited < 5
        assert app.components.store.count_rejections() == 0
        assert 'error_code="2200"' not in app.metrics.exposition().decode()
    finally:
        http_server.stop(grace_seconds=1)
        app.close()
    [line] = [r for r in caplog.records if r.getMessage().startswith("client timeout")]
    assert line.levelno == logging.WARNING and line.name == "adaptor.server"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
