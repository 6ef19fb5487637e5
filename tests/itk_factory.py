"""Synthetic ITK requests for tests: SOAP 1.1 envelope, Distribution Envelope and a small CDA document.

Everything here is made up: the patient (NHS number in the 999 000 0000-999 999 9999 test range), the
organisations (``X...`` ODS codes) and the text. A default request passes every validation rule, including the
schema rules (the CDA is valid against ``POCD_MT000002UK01.xsd``). Tests change one thing, either through
:func:`build_request` arguments or by editing the returned tree with the ``find``/``remove`` helpers.

    root = build_request(interaction="copyRecipientNHS111CDADocument-v2-0")
    find(root, "itk:header").set("service", "urn:other")
    raw = to_bytes(root)
"""

from __future__ import annotations

import base64
import gzip
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from lxml import etree

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
ITK = "urn:nhs-itk:ns:201005"
HL7 = "urn:hl7-org:v3"
NPFITLC = "NPFIT:HL7:Localisation"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
PATHWAYS = "http://nhspathways.org/webservices/pathways/pathwaysCase"
NS = {"soap": SOAP11, "wsa": WSA, "wsse": WSSE, "wsu": WSU, "itk": ITK, "hl7": HL7, "npfitlc": NPFITLC}

ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"
SERVICE = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"
INTERACTION_KEY = "urn:nhs-itk:ns:201005:interaction"
INTERACTION = "urn:nhs-itk:interaction:primaryOutofHourRecipientNHS111CDADocument-v2-0"
PROFILE = "urn:nhs-en:profile:nhs111CDADocument-v2-0"
DOS_TYPE = "2.16.840.1.113883.2.1.3.2.4.18.44"
ENDPOINT = "http://localhost:8080/report"  # the default PEM111_SOAP_SEND_TO

RECIPIENT_ODS = "XTEST1"
RECIPIENT_DOS = "9000001"
SENDER_ODS = "XSEND"
USERNAME = "CN=XSEND.synthetic.test"
#: A synthetic NHS number from the test range (valid modulus-11 check digit).
NHS_NUMBER = "9990001235"

_NOW = object()  # default marker: a Timestamp valid right now


def new_id() -> str:
    return str(uuid.uuid4()).upper()


def _sub(
    parent: etree._Element, ns: str, name: str, text: str | None = None, **attrib: str
) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{name}", attrib)
    element.text = text
    return element


def xs_datetime(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# -- CDA -----------------------------------------------------------------------------------------------------


def pathways_case(*, valid: bool = True) -> bytes:
    """A tiny PathwaysCase document (not schema-complete: only good for "undecodable" / "invalid" checks)."""
    case = etree.Element(f"{{{PATHWAYS}}}PathwaysCase", nsmap={None: PATHWAYS})
    if not valid:
        etree.SubElement(case, f"{{{PATHWAYS}}}notAnElementOfTheSchema").text = "x"
    return etree.tostring(case, xml_declaration=True, encoding="UTF-8")


def clinical_document(
    effective_time: str | None = "20240102103000+0000",
    *,
    pathways_base64: str | None = None,
    title: str = "Report",
) -> etree._Element:
    """A minimal NHS 111 report, valid against POCD_MT000002UK01.xsd, about a synthetic patient.

    ``pathways_base64`` adds the ObservationMedia entry that carries the Pathways case (rule D6).
    """
    cd = etree.Element(f"{{{HL7}}}ClinicalDocument", nsmap={None: HL7, "npfitlc": NPFITLC, "xsi": XSI})
    cd.set("classCode", "DOCCLIN")
    cd.set("moodCode", "EVN")
    _sub(cd, HL7, "typeId", root="2.16.840.1.113883.1.3", extension="POCD_HD000040")
    _sub(cd, NPFITLC, "messageType", root="2.16.840.1.113883.2.1.3.2.4.18.17", extension="POCD_MT200001GB02")
    _sub(cd, HL7, "id", root=new_id())
    _sub(cd, HL7, "code", code="819551000000100", codeSystem="2.16.840.1.113883.2.1.3.2.4.15")
    _sub(cd, HL7, "title", f"Synthetic NHS 111 {title}")
    time_element = _sub(cd, HL7, "effectiveTime")
    if effective_time is not None:
        time_element.set("value", effective_time)
    _sub(cd, HL7, "confidentialityCode", code="N", codeSystem="2.16.840.1.113883.1.11.16926")
    _sub(cd, HL7, "setId", root=new_id())
    _sub(cd, HL7, "versionNumber", value="1")

    record_target = _sub(cd, HL7, "recordTarget", typeCode="RCT", contextControlCode="OP")
    _content_id(record_target, "COCD_TP145201GB01#PatientRole")
    patient_role = _sub(record_target, HL7, "patientRole", classCode="PAT")
    _template(patient_role, "COCD_TP145201GB01#PatientRole")
    _sub(patient_role, HL7, "id", root="2.16.840.1.113883.2.1.4.1", extension=NHS_NUMBER)
    patient = _sub(patient_role, HL7, "patient", classCode="PSN", determinerCode="INSTANCE")
    _template(patient, "COCD_TP145201GB01#patientPatient")
    name = _sub(patient, HL7, "name")
    _sub(name, HL7, "given", "Synthetic")
    _sub(name, HL7, "family", "Testpatient")
    _sub(patient, HL7, "administrativeGenderCode", code="9", codeSystem="2.16.840.1.113883.2.1.3.2.4.16.25")
    _sub(patient, HL7, "birthTime", value="19800101")

    author = _sub(cd, HL7, "author", typeCode="AUT", contextControlCode="OP")
    _content_id(author, "COCD_TP145200GB01#AssignedAuthor")
    _sub(author, HL7, "functionCode", code="OA", codeSystem="2.16.840.1.113883.2.1.3.2.4.17.178")
    _sub(author, HL7, "time", value=effective_time or "20240102103000+0000")
    assigned_author = _sub(author, HL7, "assignedAuthor", classCode="ASSIGNED")
    _template(assigned_author, "COCD_TP145200GB01#AssignedAuthor")
    _sub(assigned_author, HL7, "id", root="2.16.840.1.113883.2.1.3.2.4.18.24", extension="SYNTHETIC-AUTHOR")
    person = _sub(assigned_author, HL7, "assignedPerson", classCode="PSN", determinerCode="INSTANCE")
    _template(person, "COCD_TP145200GB01#assignedPerson")
    person_name = _sub(person, HL7, "name")
    _sub(person_name, HL7, "given", "Test")
    _sub(person_name, HL7, "family", "Clinician")

    custodian = _sub(cd, HL7, "custodian", typeCode="CST")
    _content_id(custodian, "COCD_TP145018UK03#AssignedCustodian")
    assigned = _sub(custodian, HL7, "assignedCustodian", classCode="ASSIGNED")
    _template(assigned, "COCD_TP145018UK03#AssignedCustodian")
    organisation = _sub(
        assigned, HL7, "representedCustodianOrganization", classCode="ORG", determinerCode="INSTANCE"
    )
    _template(organisation, "COCD_TP145018UK03#representedCustodianOrganization")
    _sub(organisation, HL7, "id", root="2.16.840.1.113883.2.1.3.2.4.19.1", extension=SENDER_ODS)
    _sub(organisation, HL7, "name", "Synthetic 111 Service")

    component = _sub(cd, HL7, "component", typeCode="COMP", contextConductionInd="true")
    body = _sub(component, HL7, "structuredBody", classCode="DOCBODY", moodCode="EVN")
    section_component = _sub(body, HL7, "component", typeCode="COMP", contextConductionInd="true")
    section = _sub(section_component, HL7, "section", classCode="DOCSECT", moodCode="EVN")
    _sub(section, HL7, "id", root=new_id())
    _sub(section, HL7, "title", "Patient's Reported Condition")
    _sub(section, HL7, "text", "Synthetic test report, no real patient.")
    if pathways_base64 is not None:
        entry = _sub(section, HL7, "entry", typeCode="COMP", contextConductionInd="true")
        _content_id(entry, "COCD_TP146002GB01#ObservationMedia")
        media = _sub(entry, HL7, "observationMedia", classCode="OBS", moodCode="EVN")
        _template(media, "COCD_TP146002GB01#ObservationMedia")
        _sub(media, HL7, "id", root=new_id())
        value = _sub(media, HL7, "value", pathways_base64, representation="B64", mediaType="text/xml")
        value.set(f"{{{XSI}}}type", "ED")
    return cd


def _content_id(parent: etree._Element, extension: str) -> None:
    _sub(parent, NPFITLC, "contentId", root="2.16.840.1.113883.2.1.3.2.4.18.16", extension=extension)


def _template(parent: etree._Element, extension: str) -> None:
    _sub(parent, HL7, "templateId", root="2.16.840.1.113883.2.1.3.2.4.18.2", extension=extension)


# -- SOAP + Distribution Envelope ----------------------------------------------------------------------------


def build_request(
    *,
    message_id: str | None = None,
    action: str = SERVICE,
    service: str | None = None,
    to: str | None = ENDPOINT,
    reply_to: str | None = ANONYMOUS,
    timestamp: object = _NOW,
    username: str | None = USERNAME,
    security: bool = True,
    tracking_id: str | None = None,
    addresses: Sequence[tuple[str, str | None]] | None = (
        (f"urn:nhs-uk:addressing:ods:{RECIPIENT_ODS}", None),
        (RECIPIENT_DOS, DOS_TYPE),
    ),
    audit_ids: Sequence[str] | None = (f"urn:nhs-uk:identity:ods:{SENDER_ODS}",),
    sender_address: str | None = f"urn:nhs-uk:addressing:ods:{SENDER_ODS}",
    interaction: str | None = INTERACTION,
    extra_specs: Sequence[tuple[str, str]] = (),
    profile_id: str | None = PROFILE,
    documents: Sequence[etree._Element] | None = None,
    encoding: str | None = None,
) -> etree._Element:
    """A complete, valid request; every argument replaces one part (``None`` leaves the part out).

    ``timestamp``: ``(created, expires)`` datetimes, or the default: created now, expires in 10 minutes.
    ``encoding``: ``"base64"`` or ``"gzip"`` to carry the documents as (compressed) base64 text.
    """
    message_id = message_id if message_id is not None else new_id()
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11, "wsa": WSA})
    header = _sub(envelope, SOAP11, "Header")
    _sub(header, WSA, "MessageID", message_id)
    _sub(header, WSA, "Action", action).set(f"{{{SOAP11}}}mustUnderstand", "1")
    if to is not None:
        _sub(header, WSA, "To", to).set(f"{{{SOAP11}}}mustUnderstand", "1")
    if reply_to is not None:
        _sub(_sub(header, WSA, "ReplyTo"), WSA, "Address", reply_to)
    if security:
        sec = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
        if timestamp is not None:
            if timestamp is _NOW:
                now = datetime.now(UTC)
                created, expires = now, now + timedelta(minutes=10)
            else:
                created, expires = timestamp  # type: ignore[misc]
            stamp = _sub(sec, WSU, "Timestamp")
            stamp.set(f"{{{WSU}}}Id", "uuid_" + new_id())
            _sub(stamp, WSU, "Created", xs_datetime(created))
            _sub(stamp, WSU, "Expires", xs_datetime(expires))
        if username is not None:
            _sub(_sub(sec, WSSE, "UsernameToken"), WSSE, "Username", username)

    body = _sub(envelope, SOAP11, "Body")
    de = etree.SubElement(body, f"{{{ITK}}}DistributionEnvelope", nsmap={"itk": ITK})
    itk_header = _sub(de, ITK, "header", service=service or action, trackingid=tracking_id or new_id())
    if addresses is not None:
        address_list = _sub(itk_header, ITK, "addresslist")
        for uri, address_type in addresses:
            address = _sub(address_list, ITK, "address", uri=uri)
            if address_type is not None:
                address.set("type", address_type)
    if audit_ids is not None:
        audit = _sub(itk_header, ITK, "auditIdentity")
        for uri in audit_ids:
            _sub(audit, ITK, "id", uri=uri)
    documents = list(documents) if documents is not None else [clinical_document()]
    payload_ids = ["uuid_" + new_id() for _ in documents]
    manifest = _sub(itk_header, ITK, "manifest", count=str(len(documents)))
    for payload_id in payload_ids:
        item = _sub(manifest, ITK, "manifestitem", id=payload_id, mimetype="text/xml")
        if profile_id is not None:
            item.set("profileid", profile_id)
        if encoding is not None:
            item.set("base64", "true")
        if encoding == "gzip":
            item.set("compressed", "true")
    if sender_address is not None:
        _sub(itk_header, ITK, "senderAddress", uri=sender_address)
    specs = ([(INTERACTION_KEY, interaction)] if interaction is not None else []) + list(extra_specs)
    if specs:
        handling = _sub(itk_header, ITK, "handlingSpecification")
        for key, value in specs:
            _sub(handling, ITK, "spec", key=key, value=value)
    payloads = _sub(de, ITK, "payloads", count=str(len(documents)))
    for payload_id, document in zip(payload_ids, documents, strict=True):
        payload = _sub(payloads, ITK, "payload", id=payload_id)
        if encoding is None:
            payload.append(document)
        else:
            data = etree.tostring(document, xml_declaration=True, encoding="UTF-8")
            payload.text = base64.b64encode(gzip.compress(data) if encoding == "gzip" else data).decode(
                "ascii"
            )
    return envelope


def to_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# -- editing helpers -----------------------------------------------------------------------------------------


def find(root: etree._Element, path: str) -> etree._Element:
    """The element at ``path`` (prefixes of :data:`NS`): ``wsa:...`` and ``wsse:...`` paths are relative to
    soap:Header, ``itk:...`` paths to the DistributionEnvelope, others to ``root``."""
    if path.startswith(("wsa:", "wsse:")):
        context = root.find("soap:Header", NS)
    elif path.startswith("itk:"):
        context = root.find("soap:Body/itk:DistributionEnvelope", NS)
    else:
        context = root
    assert context is not None, path
    found = context.find(path, NS)
    assert found is not None, f"{path} not in the request"
    return found


def remove(root: etree._Element, path: str) -> None:
    element = find(root, path)
    parent = element.getparent()
    assert parent is not None
    parent.remove(element)


def spec(root: etree._Element, key: str = INTERACTION_KEY) -> etree._Element:
    for element in root.iterfind(
        "soap:Body/itk:DistributionEnvelope/itk:header/itk:handlingSpecification/itk:spec", NS
    ):
        if element.get("key") == key:
            return element
    raise AssertionError(f"no spec {key}")
