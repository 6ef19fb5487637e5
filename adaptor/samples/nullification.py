"""Synthetic nullifications: the 111 service withdraws a document of the catalogue that it sent in error.

:func:`nullification_document` writes the nullification document (conformance message type ``POCD_MT130001UK05``
on the wire as ``POCD_MT000002UK01``, as the published examples in ``../shared/spec/nullification/`` are): its own
id, the withdrawn document's ``setId`` with the next ``versionNumber``, the same patient, author and recipients,
``relatedDocument[@typeCode='RPLC']/parentDocument`` naming the withdrawn document, and the coded reason
(template ``COCD_TP146049UK05#Reason``) with the "Reason for Withdrawal" narrative it points at.
:func:`build_nullification` wraps it as the sender sends it: the same recipients, sender and WS-Security
Username as the message it withdraws.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from lxml import etree

from adaptor.itk.documents import REASON_CODE_SYSTEM, REASON_SECTION_TITLE, REASON_TEMPLATE, document_keys
from adaptor.itk.payloads import effective_time
from adaptor.itk.wire import ODS_ADDRESS_PREFIX, ODS_IDENTITY_PREFIX, new_upper_uuid
from adaptor.itk.xmlsafe import HL7, NS
from adaptor.samples import cda, hl7
from adaptor.samples.envelope import TIMESTAMP_TTL, build_envelope, dos_address, ods_address
from adaptor.samples.model import Nullification, Scenario
from adaptor.samples.timing import LONDON, hl7_ts, human

#: The nullification document's code (SNOMED CT) and title, as in the published examples.
NULLIFICATION_CODE = ("285091000000108", "Nullification Document")
NULLIFICATION_MESSAGE_TYPE = "POCD_MT130001UK05"
_SECTION_TEMPLATE = "COCD_TP146061UK01"


def _withdrawn_parts(request: etree._Element) -> etree._Element:
    """The ClinicalDocument a catalogue request carries (the scenarios paired with a nullification carry one)."""
    [document] = request.iter(f"{{{HL7}}}ClinicalDocument")
    return document


def _copy(source: etree._Element, target: etree._Element, name: str, **attrib: str) -> etree._Element:
    """``target/name`` with the attributes of ``source/name`` (``root``, ``code``...), and ``attrib`` over them."""
    found = source.find(f"hl7:{name}", NS)
    values: dict[str, str] = {str(key): str(value) for key, value in found.attrib.items()} if found is not None else {}
    return hl7.el(target, name, **{**values, **attrib})


def nullification_document(item: Nullification, withdrawn: Scenario, request: etree._Element) -> etree._Element:
    """The nullification document withdrawing the document of ``request`` (a request of the scenario
    ``withdrawn``), written ``item.minutes_later`` minutes after it."""
    original = _withdrawn_parts(request)
    [report] = withdrawn.reports
    original_time = effective_time(original).as_instant()
    moment = original_time + timedelta(minutes=item.minutes_later)
    version = document_keys(original).version or 1

    cd = cda.document_root(
        NULLIFICATION_CODE[1], NULLIFICATION_CODE, hl7_ts(moment), "N", message_type=NULLIFICATION_MESSAGE_TYPE
    )
    _copy(original, cd, "setId")
    hl7.el(cd, "versionNumber", value=str(version + 1))
    cda.write_record_target(cd, report.patient, moment.astimezone(LONDON).date())
    cda.write_author(cd, item.author, hl7_ts(moment))
    cda.write_custodian(cd, report.custodian)
    for recipient in report.recipients:
        cda.write_recipient(cd, recipient)

    related = hl7.el(cd, "relatedDocument", typeCode="RPLC")
    parent = hl7.el(related, "parentDocument", classCode="DOCCLIN", moodCode="EVN")
    for name in ("id", "code", "setId", "versionNumber"):
        _copy(original, parent, name)

    body = hl7.el(hl7.el(cd, "component", typeCode="COMP", contextConductionInd="true"), "structuredBody")
    body.set("classCode", "DOCBODY")
    body.set("moodCode", "EVN")
    outer = hl7.el(hl7.el(body, "component", typeCode="COMP", contextConductionInd="true"), "section")
    outer.set("classCode", "DOCSECT")
    outer.set("moodCode", "EVN")
    hl7.el(outer, "id", root=new_upper_uuid())
    _reason_entry(outer, item, hl7_ts(moment))
    _narrative(outer, item, original, original_time)
    return cd


def _reason_entry(section: etree._Element, item: Nullification, time: str) -> None:
    entry = hl7.el(section, "entry", typeCode="COMP", contextConductionInd="true")
    hl7.content_id(entry, REASON_TEMPLATE)
    observation = hl7.el(entry, "observation", classCode="OBS", moodCode="EVN")
    hl7.template_id(observation, REASON_TEMPLATE)
    hl7.el(observation, "id", root=new_upper_uuid())
    code = hl7.coded(observation, "code", item.reason, REASON_CODE_SYSTEM)
    hl7.el(hl7.el(code, "originalText"), "reference", value="#reason")
    hl7.el(observation, "effectiveTime", value=time)


def _narrative(section: etree._Element, item: Nullification, original: etree._Element, written: datetime) -> None:
    """The "Document Withdrawn" section: which document, when it was written, and why it is withdrawn."""
    component = hl7.el(section, "component", typeCode="COMP", contextConductionInd="true")
    hl7.content_id(component, f"{_SECTION_TEMPLATE}#Section1")
    withdrawn = hl7.el(component, "section", classCode="DOCSECT", moodCode="EVN")
    hl7.template_id(withdrawn, f"{_SECTION_TEMPLATE}#Section1")
    hl7.el(withdrawn, "id", root=new_upper_uuid())
    hl7.el(withdrawn, "title", "Document Withdrawn")
    hl7.el(withdrawn, "text", original.findtext("hl7:title", namespaces=NS) or "NHS 111 Report")
    for title, text in (("Withdrawn Document Created", human(written)), (REASON_SECTION_TITLE, None)):
        part = hl7.el(withdrawn, "component", typeCode="COMP", contextConductionInd="true")
        hl7.template_id(part, f"{_SECTION_TEMPLATE}#component1")
        child = hl7.el(part, "section", classCode="DOCSECT", moodCode="EVN")
        hl7.template_id(child, f"{_SECTION_TEMPLATE}#section2")
        hl7.el(child, "id", root=new_upper_uuid())
        hl7.el(child, "title", title)
        narrative = hl7.el(child, "text", text)
        if text is None:
            hl7.el(narrative, "content", item.reason_text, ID="reason")


def build_nullification(
    item: Nullification, withdrawn: Scenario, request: etree._Element, *, now: datetime
) -> etree._Element:
    """The SOAP request carrying the nullification of ``request`` (a request of ``withdrawn``): new ids, sent at
    ``now``, to the same recipients by the same sender."""
    addresses = [ods_address(v) if kind == "ods" else dos_address(v) for kind, v in withdrawn.addresses]
    sender = withdrawn.sender.ods
    return build_envelope(
        [nullification_document(item, withdrawn, request)],
        action=withdrawn.service,
        timestamp=(now, now + TIMESTAMP_TTL),
        username=withdrawn.username or None,
        addresses=addresses,
        audit_ids=[f"{ODS_IDENTITY_PREFIX}{sender}"],
        sender_address=f"{ODS_ADDRESS_PREFIX}{sender}",
        interaction=item.interaction,
        profile_id=item.profile_id,
    )
