"""A standard SOAP client built from the served WSDL: zeep loads it (and its two schemas) over HTTP from the
running server and sends corpus messages through it, with zeep's own WS-Addressing headers."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator

import pytest
import zeep
import zeep.exceptions
from lxml import etree
from server_fixture import RunningServer, free_port, require_corpus, start_server
from waiting import wait_until
from zeep.plugins import HistoryPlugin, Plugin
from zeep.wsa import WsAddressingPlugin

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
WSA = "http://www.w3.org/2005/08/addressing"
ITK = "urn:nhs-itk:ns:201005"
NS = {"s": SOAP11, "a": WSA, "itk": ITK}
OPERATION = "SendNHS111Report-v2-0"
SOAP_ACTION = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # The WSDL's address is the configured endpoint URL; zeep posts to it.
    port = free_port()
    running = start_server(
        tmp_path_factory.mktemp("zeep"), port=port, PEM111_SOAP_SEND_TO=f"http://127.0.0.1:{port}/report"
    )
    yield running
    running.stop()


def corpus_distribution_envelope(name: str) -> etree._Element:
    """The DistributionEnvelope of a corpus request, with a fresh trackingid."""
    root = etree.parse(str(require_corpus() / name)).getroot()
    envelope = root.find("s:Body/itk:DistributionEnvelope", NS)
    assert envelope is not None
    envelope.find("itk:header", NS).set("trackingid", str(uuid.uuid4()).upper())
    return envelope


def client_for(server: RunningServer, *plugins: Plugin) -> tuple[zeep.Client, HistoryPlugin]:
    history = HistoryPlugin()
    client = zeep.Client(f"{server.report_url}?wsdl", plugins=[WsAddressingPlugin(), *plugins, history])
    return client, history


def test_wsdl_loads_with_the_served_address(server: RunningServer) -> None:
    client, _ = client_for(server)

    [service] = client.wsdl.services.values()
    [port] = service.ports.values()
    operation = port.binding.get(OPERATION)
    assert port.binding_options["address"] == server.report_url
    assert operation.soapaction == SOAP_ACTION
    assert operation.input.body.qname == etree.QName(ITK, "DistributionEnvelope")
    assert operation.output.body.qname == etree.QName(ITK, "SimpleMessageResponse")


def test_typed_round_trip(server: RunningServer) -> None:
    """The DistributionEnvelope read into zeep's objects and sent through the operation's typed signature."""
    client, history = client_for(server)
    de_type = client.get_element(f"{{{ITK}}}DistributionEnvelope")
    distribution_envelope = de_type.parse(
        corpus_distribution_envelope("tpp-ooh-T6-skillset-itk-request.xml"), client.wsdl.types
    )

    result = client.service[OPERATION](header=distribution_envelope.header, payloads=distribution_envelope.payloads)

    assert result == "OK"
    sent = history.last_sent["envelope"]
    received = history.last_received["envelope"]
    assert sent.findtext("s:Header/a:Action", namespaces=NS) == SOAP_ACTION
    assert sent.findtext("s:Header/a:To", namespaces=NS) == server.report_url
    request_id = sent.findtext("s:Header/a:MessageID", namespaces=NS)
    assert received.findtext("s:Header/a:RelatesTo", namespaces=NS) == request_id
    assert received.findtext("s:Header/a:Action", namespaces=NS) == SOAP_ACTION + "Response"
    wait_until(lambda: _delivered(server, request_id), "the delivery to the outbox", 5.0)


class SendExactly(Plugin):
    """Replaces the body zeep built with a given DistributionEnvelope, byte for byte (zeep keeps its headers)."""

    def __init__(self, distribution_envelope: etree._Element) -> None:
        self.distribution_envelope = distribution_envelope

    def egress(self, envelope, http_headers, operation, binding_options):  # type: ignore[no-untyped-def]
        body = envelope.find(f"{{{SOAP11}}}Body")
        for child in list(body):
            body.remove(child)
        body.append(copy.deepcopy(self.distribution_envelope))
        return envelope, http_headers


def test_raw_corpus_envelope_round_trip(server: RunningServer) -> None:
    """The corpus repeat-caller DistributionEnvelope (six ClinicalDocuments) exactly as published."""
    distribution_envelope = corpus_distribution_envelope("repeat-caller-itk-request.xml")
    client, history = client_for(server, SendExactly(distribution_envelope))
    # zeep moves xs:any content into the message it builds: give it a copy to parse.
    parsed = client.get_element(f"{{{ITK}}}DistributionEnvelope").parse(
        copy.deepcopy(distribution_envelope), client.wsdl.types
    )

    result = client.service[OPERATION](header=parsed.header, payloads=parsed.payloads)

    assert result == "OK"
    sent_body = history.last_sent["envelope"].find("s:Body/itk:DistributionEnvelope", NS)
    assert etree.tostring(sent_body, method="c14n", exclusive=True) == etree.tostring(
        distribution_envelope, method="c14n", exclusive=True
    )


def test_fault_reaches_the_client_with_its_toolkit_error_info(server: RunningServer) -> None:
    client, _ = client_for(server)
    de = client.get_element(f"{{{ITK}}}DistributionEnvelope").parse(
        corpus_distribution_envelope("tpp-ooh-T6-skillset-itk-request.xml"), client.wsdl.types
    )
    de.header.manifest.manifestitem[0].profileid = "urn:nhs-en:profile:invalid"

    with pytest.raises(zeep.exceptions.Fault) as raised:
        client.service[OPERATION](header=de.header, payloads=de.payloads)

    fault = raised.value
    assert fault.code.endswith("Client")
    info = fault.detail.find(f"{{{ITK}}}ToolkitErrorInfo")
    assert info.findtext(f"{{{ITK}}}ErrorCode") == "1000"
    assert info.findtext(f"{{{ITK}}}ErrorText") == "Invalid manifest profile Id: urn:nhs-en:profile:invalid"


def _delivered(server: RunningServer, message_id: str) -> bool:
    return any(message_id.encode() in p.read_bytes() for p in server.outbox_files())
