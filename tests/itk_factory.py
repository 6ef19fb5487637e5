"""Synthetic ITK requests for tests: a thin layer over :mod:`adaptor.samples`, the project's one builder.

Everything here is made up: the patient (NHS number in the 999 000 0000-999 999 9999 test range), the
organisations (``X...`` ODS codes) and the text. A default request passes every validation rule, including the
schema rules (the CDA is valid against ``POCD_MT000002UK01.xsd``). Tests change one thing, either through
:func:`build_request` arguments or by editing the returned tree with the ``find``/``remove`` helpers.

    root = build_request(interaction="copyRecipientNHS111CDADocument-v2-0")
    find(root, "itk:header").set("service", "urn:other")
    raw = to_bytes(root)

For complete, realistic messages use the sample catalogue (``adaptor.samples.SCENARIOS``) instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from lxml import etree

from adaptor.delivery.forwarders import Delivery
from adaptor.itk.wire import DOS_ADDRESS_TYPE as DOS_TYPE
from adaptor.itk.wire import INTERACTION_KEY
from adaptor.itk.wire import new_upper_uuid as new_id
from adaptor.itk.xmlsafe import ANONYMOUS, HL7, ITK, NPFITLC, SOAP11, SOAP12, WSA, WSSE, WSU
from adaptor.samples import cda, envelope
from adaptor.samples.envelope import (
    ENDPOINT,
    PROFILE,
    SERVICE,
    to_bytes,
    xs_datetime,
)

#: What tests import from here: this module's own builders and constants, and the namespaces and envelope names of
#: ``adaptor.itk.xmlsafe`` and ``adaptor.samples.envelope`` re-exported, so that a test needs one import.
__all__ = [
    "sample_delivery",
    # re-exported
    "ANONYMOUS",
    "DOS_TYPE",
    "ENDPOINT",
    "HL7",
    "INTERACTION_KEY",
    "ITK",
    "NPFITLC",
    "PROFILE",
    "SERVICE",
    "SOAP11",
    "SOAP12",
    "WSA",
    "WSSE",
    "WSU",
    "new_id",
    "to_bytes",
    "xs_datetime",
    # defined here
    "INTERACTION",
    "NHS_NUMBER",
    "NS",
    "PATHWAYS",
    "RECIPIENT_DOS",
    "RECIPIENT_ODS",
    "SENDER_ODS",
    "USERNAME",
    "XSI",
    "build_request",
    "clinical_document",
    "find",
    "pathways_case",
    "remove",
    "spec",
]

XSI = cda.XSI
PATHWAYS = "http://nhspathways.org/webservices/pathways/pathwaysCase"
NS = {"soap": SOAP11, "wsa": WSA, "wsse": WSSE, "wsu": WSU, "itk": ITK, "hl7": HL7, "npfitlc": NPFITLC}

INTERACTION = "urn:nhs-itk:interaction:primaryOutofHourRecipientNHS111CDADocument-v2-0"

RECIPIENT_ODS = "XTEST1"
RECIPIENT_DOS = "9000001"
SENDER_ODS = "XSEND"
USERNAME = "CN=XSEND.synthetic.test"
#: A synthetic NHS number from the test range (valid modulus-11 check digit).
NHS_NUMBER = cda.MINIMAL_PATIENT.nhs_number

_NOW = object()  # default marker: a Timestamp valid right now


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
    return cda.minimal_document(effective_time, pathways_base64=pathways_base64, title=title)


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
    return envelope.build_envelope(
        list(documents) if documents is not None else [clinical_document()],
        message_id=message_id,
        action=action,
        service=service,
        to=to,
        reply_to=reply_to,
        timestamp="now" if timestamp is _NOW else timestamp,
        username=username,
        security=security,
        tracking_id=tracking_id,
        addresses=addresses,
        audit_ids=audit_ids,
        sender_address=sender_address,
        interaction=interaction,
        extra_specs=extra_specs,
        profile_id=profile_id,
        encoding=encoding,
    )


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


def sample_delivery(
    message_id: str = "uuid:MSG-1",
    bundle_json: bytes = b'{"resourceType":"Bundle"}',
    *,
    record_id: str = "0f6c7a52-0000-4000-8000-000000000001",
) -> Delivery:
    """What the outbox hands a forwarder, with the envelope facts of a synthetic referral (two ODS codes, one DoS
    id) and a stand-in Bundle."""
    return Delivery(
        record_id=record_id,
        message_id=message_id,
        tracking_id="TRACK-1",
        interaction="urn:nhs-itk:interaction:primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0",
        ods_codes=("A91000", "B82001"),
        dos_ids=("2000012345",),
        bundle_json=bundle_json,
    )
