"""Nullification requests for tests: the published examples (``../shared/spec/nullification/``) as a 111 sender
sends them, and originals carrying the document they withdraw.

The examples withdraw the document ``7D5B4DC0-AE1A-11DB-9601-B18E1E0994CD`` (setId
``7D5B4DC0-AE1A-11DB-95FC-B18E1E0994CD``, version 1). :func:`original` is a synthetic 111 report with those
identifiers; :func:`nullification` one of the examples wrapped with a 111 nullification interaction and profile id,
addressed as :func:`itk_factory.build_request` addresses (the ITK-wrapped example gets the 111 service, the
receiver's addresses and a manifest profile id, and keeps the rest of its DistributionEnvelope).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from conftest import require_shared
from itk_factory import (
    ITK,
    NS,
    RECIPIENT_DOS,
    RECIPIENT_ODS,
    SENDER_ODS,
    SERVICE,
    build_request,
    clinical_document,
    find,
    new_id,
)
from lxml import etree

from adaptor.cli.sender import wrap_distribution_envelope
from adaptor.itk.wire import DOS_ADDRESS_TYPE, INTERACTION_KEY

NULLIFY_IUC = "urn:nhs-itk:interaction:nullifyIntegratedUrgentCareCDADocument-v3-0"
NULLIFY_111 = "urn:nhs-itk:interaction:nullifyNHS111CDADocument-v1-0"
PROFILE_V5 = "urn:nhs-en:profile:nullificationDocument-v5-0"
PROFILE_V6 = "urn:nhs-en:profile:NullifyDocument-v6-0"

BARE_EXAMPLES = ("POCD_EX130001UK05_01.xml", "POCD_EX130001UK05_02.xml")
ITK_EXAMPLE = "POCD_EX130001UK05_ITK_02_wrapped.xml"
EXAMPLES = (*BARE_EXAMPLES, ITK_EXAMPLE)

WITHDRAWN_ID = "7D5B4DC0-AE1A-11DB-9601-B18E1E0994CD"
WITHDRAWN_SET_ID = "7D5B4DC0-AE1A-11DB-95FC-B18E1E0994CD"
WITHDRAWN_VERSION = 1
#: What the examples' reason and author read as.
REASON = ("02", "Sent to wrong patient record")
AUTHOR = "Dr Steve Fulham, Solihull Hospital (RR109)"
#: The examples' patient (an NHS number of theirs): it must never reach a log.
EXAMPLE_NHS_NUMBER = "9900002558"

#: The resources a withdrawal marks, and how (nullification.md §2.3).
STATUS_RESOURCES = {
    "Composition",
    "Encounter",
    "ReferralRequest",
    "ProcedureRequest",
    "CarePlan",
    "Appointment",
    "Observation",
    "QuestionnaireResponse",
    "Consent",
    "List",
}

Json = dict[str, Any]


def example_path(name: str) -> Any:
    return require_shared("spec", "nullification", name)


def example_document(name: str) -> etree._Element:
    """The example's ClinicalDocument (the one inside the ITK-wrapped example)."""
    root = etree.parse(str(example_path(name))).getroot()
    return (
        root if root.tag == "{urn:hl7-org:v3}ClinicalDocument" else next(root.iter("{urn:hl7-org:v3}ClinicalDocument"))
    )


def set_document_ids(document: etree._Element, document_id: str, set_id: str, version: int) -> etree._Element:
    find(document, "hl7:id").set("root", document_id)
    find(document, "hl7:setId").set("root", set_id)
    find(document, "hl7:versionNumber").set("value", str(version))
    return document


def original(
    document_id: str = WITHDRAWN_ID, set_id: str = WITHDRAWN_SET_ID, version: int = WITHDRAWN_VERSION, **changes: Any
) -> etree._Element:
    """A synthetic 111 report whose document has these identifiers (by default, the one the examples withdraw)."""
    return build_request(documents=[set_document_ids(clinical_document(), document_id, set_id, version)], **changes)


def nullification(
    name: str = BARE_EXAMPLES[0],
    *,
    interaction: str = NULLIFY_IUC,
    profile_id: str = PROFILE_V5,
    withdraws: tuple[str, str, int] | None = None,
) -> etree._Element:
    """The example ``name`` as a 111 sender sends it; ``withdraws`` = (id, setId, version) replaces the
    parentDocument's identifiers (another document withdrawn)."""
    document = copy.deepcopy(example_document(name))
    if withdraws is not None:
        parent = find(document, "hl7:relatedDocument/hl7:parentDocument")
        set_document_ids(parent, *withdraws)
    if name != ITK_EXAMPLE:
        return build_request(documents=[document], interaction=interaction, profile_id=profile_id)
    envelope = etree.parse(str(example_path(name))).getroot()
    header = envelope.find("itk:header", NS)
    assert header is not None
    header.set("service", SERVICE)
    header.set("trackingid", new_id())
    addresses = header.find("itk:addresslist", NS)
    assert addresses is not None
    for address in list(addresses):
        addresses.remove(address)
    etree.SubElement(addresses, f"{{{ITK}}}address", uri=f"urn:nhs-uk:addressing:ods:{RECIPIENT_ODS}")
    etree.SubElement(addresses, f"{{{ITK}}}address", uri=RECIPIENT_DOS, type=DOS_ADDRESS_TYPE)
    header.find("itk:auditIdentity/itk:id", NS).set("uri", f"urn:nhs-uk:identity:ods:{SENDER_ODS}")  # type: ignore[union-attr]
    for item in header.iterfind("itk:manifest/itk:manifestitem", NS):
        item.set("profileid", profile_id)
    for spec in header.iterfind("itk:handlingSpecification/itk:spec", NS):
        if spec.get("key") == INTERACTION_KEY:
            spec.set("value", interaction)
    [payload_document] = envelope.iter("{urn:hl7-org:v3}ClinicalDocument")
    payload_document.getparent().replace(payload_document, document)  # type: ignore[union-attr]
    return wrap_distribution_envelope(envelope, "http://localhost:8080/report")


def message_id(root: etree._Element) -> str:
    return find(root, "wsa:MessageID").text or ""


def entries(bundle: Json) -> dict[str, Json]:
    """fullUrl -> resource."""
    return {entry["fullUrl"]: entry["resource"] for entry in bundle["entry"]}


def assert_withdraws(withdrawal: Json, delivered: Json, interaction: str = NULLIFY_IUC) -> None:
    """``withdrawal`` is the withdrawal of the Bundle ``delivered`` (nullification.md §2.3)."""
    before, after = entries(delivered), entries(withdrawal)
    [old_header] = [url for url, r in before.items() if r["resourceType"] == "MessageHeader"]
    [new_header] = [url for url, r in after.items() if r["resourceType"] == "MessageHeader"]
    assert new_header != old_header and after[new_header]["id"] != before[old_header]["id"]
    assert set(after) - {new_header} == set(before) - {old_header}  # the same fullUrls and ids
    header = after[new_header]
    assert header["reason"] == {"coding": [{"system": INTERACTION_KEY, "code": interaction}]}
    assert header["event"] == before[old_header]["event"]
    assert header["extension"][0]["valueCodeableConcept"]["coding"][0]["code"]
    for url, resource in after.items():
        assert resource["id"] == before.get(url, resource)["id"]
        kind = resource["resourceType"]
        if kind in STATUS_RESOURCES:
            assert resource["status"] == "entered-in-error", kind
        elif kind == "Condition":
            assert resource["verificationStatus"] == "entered-in-error"
        elif kind != "MessageHeader":
            assert resource == before[url], kind  # nothing else changes
    assert any(r["resourceType"] in STATUS_RESOURCES for r in after.values())


def bundle_of(text: str | bytes) -> Json:
    value: Json = json.loads(text)
    return value
