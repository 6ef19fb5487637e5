"""Every validation rule of wire-contract.md section 4 (A1-D6, E1, E2), one request change at a time.

Requests come from :mod:`itk_factory` (synthetic, valid by default); the corpus requests in ``../shared`` must all
pass, in the default profile, the strict profile and with the schema rules switched on.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REQUEST_SUFFIX, corpus_pairs, require_shared
from itk_factory import (
    DOS_TYPE,
    ENDPOINT,
    HL7,
    ITK,
    NS,
    SOAP11,
    SOAP12,
    WSA,
    WSSE,
    WSU,
    build_request,
    clinical_document,
    find,
    new_id,
    pathways_case,
    remove,
    spec,
    to_bytes,
)
from lxml import etree

from adaptor.config import Settings
from adaptor.delivery import conversion
from adaptor.itk import rules as itk
from adaptor.itk import schemas
from adaptor.itk.allowlist import AllowList
from adaptor.itk.faults import SOAP_VALIDATION_FAILED, FaultCode, ItkFault
from adaptor.itk.message import ItkMessage
from adaptor.itk.rules import classify_interaction, parse_request, validate_request
from mappings.context import UNREAD

DEFAULT = Settings()
STRICT = Settings(soap_validation_enabled=True)
UNCONFIGURED = AllowList(DEFAULT)


def schema_settings(**changes: object) -> Settings:
    """Settings with the published schema pack (rules D4-D6); fails under CI when ../shared is missing."""
    return Settings(schema_dir=str(require_shared("schemas")), **changes)  # type: ignore[arg-type]


def validate(
    request: etree._Element | bytes,
    settings: Settings = DEFAULT,
    allow_list: AllowList = UNCONFIGURED,
    now: datetime | None = None,
) -> ItkMessage:
    raw = request if isinstance(request, bytes) else to_bytes(request)
    return validate_request(parse_request(raw, settings), settings, allow_list, now=now)


def reject(
    request: etree._Element | bytes,
    settings: Settings = DEFAULT,
    allow_list: AllowList = UNCONFIGURED,
    now: datetime | None = None,
) -> ItkFault:
    with pytest.raises(ItkFault) as caught:
        validate(request, settings, allow_list, now)
    return caught.value


def assert_fault(
    fault: ItkFault,
    rule: str,
    text: str,
    diagnostic: str | None = SOAP_VALIDATION_FAILED,
    *,
    code: int = 1000,
    faultcode: FaultCode = FaultCode.CLIENT,
) -> None:
    assert (fault.rule, fault.error_code, fault.faultcode, fault.text) == (rule, code, faultcode, text)
    if diagnostic is not None:
        assert fault.diagnostic == diagnostic


# -- the factory's request is valid -------------------------------------------------------------------------------


def test_synthetic_request_is_valid_in_every_profile() -> None:
    message = validate(build_request())
    assert message.event == "referral-1"
    assert message.warnings == ()
    validate(build_request(), STRICT)


def test_synthetic_request_is_valid_against_the_schema_pack() -> None:
    message = validate(build_request(), schema_settings(soap_validation_enabled=True))
    assert message.warnings == ()


# -- A1, A2: raw bytes ------------------------------------------------------------------------------------------


def test_a1_body_larger_than_the_maximum() -> None:
    settings = Settings(max_request_bytes=2048)
    with pytest.raises(ItkFault) as caught:
        parse_request(b"<x>" + b" " * 4096 + b"</x>", settings)
    assert_fault(caught.value, "A1", "Message too large", None)
    assert "2048" in (caught.value.diagnostic or "")


@pytest.mark.parametrize(
    ("raw", "diagnostic_part"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"<soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/envelope/'><soap:Body>", "not well-formed"),
        (b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><x>&e;</x>", "DOCTYPE"),
        (
            b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]><l>&b;</l>',
            "DOCTYPE",
        ),
        ("<?xml version='1.0' encoding='UTF-16'?><!DOCTYPE x><x/>".encode("utf-16"), "DOCTYPE"),
    ],
)
def test_a2_not_acceptable_xml(raw: bytes, diagnostic_part: str) -> None:
    with pytest.raises(ItkFault) as caught:
        parse_request(raw, DEFAULT)
    assert_fault(caught.value, "A2", "This is not a valid XML message", None)
    assert diagnostic_part in (caught.value.diagnostic or "")


def test_a2_large_malformed_body_is_rejected_fast() -> None:
    raw = to_bytes(build_request()) + b"<unclosed>" + b"x" * (5 * 1024 * 1024)
    started = time.perf_counter()
    with pytest.raises(ItkFault) as caught:
        parse_request(raw, DEFAULT)
    assert caught.value.rule == "A2"
    assert time.perf_counter() - started < 1.0


# -- A3-A5: the SOAP envelope -----------------------------------------------------------------------------------


def test_a3_soap12_envelope_is_a_version_mismatch_with_relates_to() -> None:
    message_id = new_id()
    raw = to_bytes(build_request(message_id=message_id)).replace(SOAP11.encode(), SOAP12.encode())
    fault = reject(raw)
    assert_fault(fault, "A3", "SOAP version mismatch", None, faultcode=FaultCode.VERSION_MISMATCH)
    assert fault.relates_to == message_id


def test_a4_root_is_not_a_soap_envelope() -> None:
    assert_fault(
        reject(b"<itk:DistributionEnvelope xmlns:itk='urn:nhs-itk:ns:201005'/>"), "A4", "DistributionEnvelope missing"
    )
    # An Envelope in no namespace is not "another SOAP version": it is not a SOAP envelope at all.
    assert reject(b"<Envelope><Body/></Envelope>").rule == "A4"


def test_a4_envelope_without_body() -> None:
    root = build_request()
    root.remove(find(root, "soap:Body"))
    assert_fault(reject(root), "A4", "DistributionEnvelope missing")


@pytest.mark.parametrize("value", ["1", "true", " true "])
def test_a5_foreign_header_with_must_understand(value: str) -> None:
    root = build_request()
    foreign = etree.SubElement(find(root, "soap:Header"), "{urn:example:local}LocalHeaderElement")
    foreign.set(f"{{{SOAP11}}}mustUnderstand", value)
    fault = reject(root)
    assert_fault(
        fault,
        "A5",
        "Rejecting foreign header",
        "{urn:example:local}LocalHeaderElement",
        faultcode=FaultCode.MUST_UNDERSTAND,
    )
    assert fault.relates_to == find(root, "wsa:MessageID").text


def test_a5_foreign_header_without_must_understand_is_ignored() -> None:
    root = build_request()
    header = find(root, "soap:Header")
    etree.SubElement(header, "{urn:example:local}Optional").set(f"{{{SOAP11}}}mustUnderstand", "0")
    etree.SubElement(header, "{urn:example:local}Plain")
    # an unqualified mustUnderstand attribute is not the SOAP one
    etree.SubElement(header, "{urn:example:local}Other").set("mustUnderstand", "1")
    validate(root)


def test_a5_understood_headers_accept_must_understand() -> None:
    root = build_request()
    header = find(root, "soap:Header")
    for name in ("From", "FaultTo", "RelatesTo"):
        etree.SubElement(header, f"{{{WSA}}}{name}").text = "x"
    for block in header:
        block.set(f"{{{SOAP11}}}mustUnderstand", "1")
    validate(root)


# -- B1-B4: WS-Addressing (core and default profile) ------------------------------------------------------------


def test_b1_message_id_missing_or_empty() -> None:
    root = build_request()
    remove(root, "wsa:MessageID")
    fault = reject(root)
    assert_fault(fault, "B1", "MessageId missing")
    assert fault.relates_to is None
    assert reject(build_request(message_id="  ")).rule == "B1"


def test_b1_non_uuid_message_ids_are_accepted() -> None:
    assert validate(build_request(message_id="uuid:" + new_id().lower())).message_id.startswith("uuid:")
    assert validate(build_request(message_id="not-a-uuid")).message_id == "not-a-uuid"


def test_b2_action_missing() -> None:
    root = build_request()
    remove(root, "wsa:Action")
    assert_fault(reject(root), "B2", "Action node missing")


def test_b3_to_is_not_an_absolute_uri() -> None:
    fault = reject(build_request(to="http//:this.is.invalid/address"))
    assert_fault(fault, "B3", "Invalid Send To value: http//:this.is.invalid/address")


def test_b3_long_values_are_truncated_to_200_characters() -> None:
    fault = reject(build_request(to="x" * 500))
    assert fault.text == "Invalid Send To value: " + "x" * 200


def test_b3_any_absolute_to_is_accepted_by_default() -> None:
    validate(build_request(to="https://another-host.example/itk"))
    validate(build_request(to=""))
    validate(build_request(to=None))


def test_b4_reply_to_not_anonymous() -> None:
    fault = reject(build_request(reply_to="https://elsewhere.example/reply"))
    assert_fault(fault, "B4", "Invalid ReplyTo: https://elsewhere.example/reply")
    assert reject(build_request(reply_to="https://x.example/NOTanonymous"), STRICT).rule == "B4"
    validate(build_request(reply_to=None))


# -- B5-B14: the strict profile ---------------------------------------------------------------------------------


def test_b5_to_missing_in_strict_profile_only() -> None:
    assert_fault(reject(build_request(to=None), STRICT), "B5", "Send To missing")
    validate(build_request(to=None))


def test_b6_to_must_be_a_configured_endpoint() -> None:
    fault = reject(build_request(to="https://another-host.example/itk"), STRICT)
    assert_fault(fault, "B6", "Invalid Send To value: https://another-host.example/itk")


@pytest.mark.parametrize(
    "to", [ENDPOINT, "HTTP://LOCALHOST:8080/report/", " http://localhost:8080/report ", "https://b.example/itk"]
)
def test_b6_to_matches_any_configured_endpoint_tolerantly(to: str) -> None:
    settings = STRICT.replace(soap_send_to=(ENDPOINT, "https://b.example:443/itk"))
    validate(build_request(to=to), settings)


def test_b7_timestamp_missing() -> None:
    assert_fault(reject(build_request(timestamp=None), STRICT), "B7", "Timestamp missing")
    assert reject(build_request(security=False), STRICT).rule == "B7"
    validate(build_request(security=False))  # default profile: no WS-Security needed


@pytest.mark.parametrize(
    ("part", "value"),
    [
        ("Created", "yesterday"),
        ("Created", "{CREATED}"),
        ("Expires", "2024-13-01T10:00:00Z"),
        ("Expires", "2024-01-01 10:00:00Z"),
        ("Created", ""),
    ],
)
def test_b8_timestamp_not_a_datetime(part: str, value: str) -> None:
    root = build_request()
    find(root, f"wsse:Security/wsu:Timestamp/wsu:{part}").text = value
    assert_fault(reject(root, STRICT), "B8", "Invalid timestamp")


def test_b8_created_or_expires_missing() -> None:
    root = build_request()
    remove(root, "wsse:Security/wsu:Timestamp/wsu:Expires")
    assert_fault(reject(root, STRICT), "B8", "Invalid timestamp")


def test_b9_created_not_before_expires() -> None:
    now = datetime.now(UTC)
    assert_fault(reject(build_request(timestamp=(now, now)), STRICT), "B9", "Invalid timestamp")
    later = now + timedelta(minutes=1)
    assert reject(build_request(timestamp=(later, now)), STRICT).rule == "B9"


def test_b10_timestamp_expired() -> None:
    created = datetime(2020, 1, 1, 10, 0, tzinfo=UTC)
    root = build_request(timestamp=(created, created + timedelta(minutes=10)))
    assert_fault(reject(root, STRICT), "B10", "Timestamp expired", None)
    # within the allowed clock skew (300 s) it is still accepted
    validate(root, STRICT, now=created + timedelta(minutes=14))
    assert reject(root, STRICT, now=created + timedelta(minutes=15)).rule == "B10"


def test_b11_timestamp_not_yet_valid() -> None:
    created = datetime.now(UTC) + timedelta(hours=1)
    root = build_request(timestamp=(created, created + timedelta(minutes=10)))
    assert_fault(reject(root, STRICT), "B11", "Timestamp not yet valid", None)


def test_b8_offsets_and_fractions_are_understood() -> None:
    root = build_request()
    now = datetime.now(UTC)
    find(root, "wsse:Security/wsu:Timestamp/wsu:Created").text = (now + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%S.123456789+01:00"
    )
    find(root, "wsse:Security/wsu:Timestamp/wsu:Expires").text = (now + timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%S"
    )
    validate(root, STRICT)


def test_b12_username_missing_is_access_denied() -> None:
    assert_fault(reject(build_request(username=None), STRICT), "B12", "Username missing", code=3000)
    root = build_request()
    find(root, "wsse:Security/wsse:UsernameToken/wsse:Username").text = " "
    assert reject(root, STRICT).rule == "B12"


def test_b13_username_deny_and_allow_lists() -> None:
    deny = Settings(username_deny_list=("Unknown",))
    assert_fault(reject(build_request(username="Unknown"), deny), "B13", "Username not authorised", None, code=3000)
    assert reject(build_request(username=" unknown "), deny).rule == "B13"
    validate(build_request(username="Known"), deny)
    allow = Settings(username_allow_list=("Known",))
    validate(build_request(username="Known"), allow)
    assert reject(build_request(username="Other"), allow).error_code == 3000
    assert reject(build_request(username=None), allow).rule == "B13"


def test_b14_blank_attribute_in_soap_header() -> None:
    root = build_request()
    find(root, "wsse:Security/wsu:Timestamp").set(f"{{{WSU}}}Id", " ")
    assert_fault(reject(root, STRICT), "B14", "Blank attribute: Header/Security/Timestamp/@Id")
    validate(root)  # default profile


def test_b14_blank_attribute_in_itk_header() -> None:
    root = build_request(documents=[clinical_document(), clinical_document()])
    find(root, "itk:header/itk:manifest").findall("itk:manifestitem", NS)[1].set("mimetype", "")
    assert_fault(reject(root, STRICT), "B14", "Blank attribute: header/manifest/manifestitem[2]/@mimetype")


# -- C1-C16: the Distribution Envelope --------------------------------------------------------------------------


def test_c1_body_without_distribution_envelope() -> None:
    root = build_request()
    body = find(root, "soap:Body")
    body.remove(find(root, "soap:Body/itk:DistributionEnvelope"))
    etree.SubElement(body, "{urn:example}Other").text = "x"
    assert_fault(reject(root), "C1", "DistributionEnvelope missing")


def test_c2_tracking_id_missing_or_empty() -> None:
    root = build_request()
    del find(root, "itk:header").attrib["trackingid"]
    assert_fault(reject(root), "C2", "Itk TrackingId missing")
    find(root, "itk:header").set("trackingid", "")
    assert reject(root).rule == "C2"


def test_c3_service_differs_from_action() -> None:
    fault = reject(build_request(service="urn:nhs-itk:services:201005:SomethingElse-v1-0"))
    assert_fault(fault, "C3", "Soap Action is not equal to ITK service")
    root = build_request()
    del find(root, "itk:header").attrib["service"]
    assert reject(root).rule == "C3"


def test_c3_short_service_names_are_tolerated() -> None:
    validate(build_request(service="SendNHS111Report-v2-0"))
    validate(build_request(action="SendNHS111Report-v2-0", service="urn:nhs-itk:services:201005:SendNHS111Report-v2-0"))
    validate(build_request(service=" urn:nhs-itk:services:201005:SendNHS111Report-v2-0 "))
    dms = "urn:nhs-itk:services:201005:SendNHS111Report-v2-0_DMS"
    assert validate(build_request(action=dms)).action == dms
    assert reject(build_request(action=dms, service="SendNHS111Report-v2-0")).rule == "C3"


def two_documents() -> etree._Element:
    return build_request(documents=[clinical_document(), clinical_document("20240102113000+0000")])


def test_c4_manifest_and_payload_counts_differ() -> None:
    root = build_request()
    find(root, "itk:payloads").set("count", "2")
    assert_fault(reject(root), "C4", "Manifest count and payload count don't match")
    find(root, "itk:payloads").set("count", "one")
    find(root, "itk:header/itk:manifest").set("count", "one")
    assert reject(root).rule == "C4"
    del find(root, "itk:payloads").attrib["count"]
    del find(root, "itk:header/itk:manifest").attrib["count"]
    assert reject(root).rule == "C4"


def test_c4_counts_compare_as_integers() -> None:
    root = build_request()
    find(root, "itk:payloads").set("count", " +01 ")
    validate(root)
    find(root, "itk:payloads").set("count", "\u0661")  # ARABIC-INDIC DIGIT ONE is not an xs:integer
    assert reject(root).rule == "C4"


def test_c5_manifest_count_differs_from_items() -> None:
    root = build_request()
    find(root, "itk:payloads").set("count", "2")
    find(root, "itk:header/itk:manifest").set("count", "2")
    assert_fault(reject(root), "C5", "Manifest count attribute and manifest items size don't match")


def test_c6_payload_count_differs_from_payloads() -> None:
    root = two_documents()
    remove(root, "itk:payloads/itk:payload")  # two manifest items, payloads count 2, one payload
    assert_fault(reject(root), "C6", "Payload count attribute and payload items size don't match")


def test_c7_payload_without_id() -> None:
    root = build_request()
    del find(root, "itk:payloads/itk:payload").attrib["id"]
    assert_fault(reject(root), "C7", "Payload id missing")


def test_c8_manifest_and_payload_ids_differ() -> None:
    root = build_request()
    find(root, "itk:header/itk:manifest/itk:manifestitem").set("id", "uuid_" + new_id())
    assert_fault(reject(root), "C8", "Manifest and payload items IDs don't match")


def test_c8_duplicate_ids() -> None:
    root = two_documents()
    items = find(root, "itk:header/itk:manifest").findall("itk:manifestitem", NS)
    payloads = find(root, "itk:payloads").findall("itk:payload", NS)
    items[1].set("id", items[0].get("id"))
    payloads[1].set("id", items[0].get("id"))
    assert reject(root).rule == "C8"


def test_c8_ids_are_matched_as_sets_not_by_position() -> None:
    root = two_documents()
    manifest = find(root, "itk:header/itk:manifest")
    first = manifest.find("itk:manifestitem", NS)
    manifest.remove(first)
    manifest.append(first)
    validate(root)


def test_c9_profile_id_missing() -> None:
    assert_fault(reject(build_request(profile_id=None)), "C9", "Manifest profile Id missing")


@pytest.mark.parametrize("value", ["", "invalid", "urn:nhs-en:profile:IntegratedUrgentCareReport-v3-1"])
def test_c10_profile_id_not_allowed(value: str) -> None:
    assert_fault(reject(build_request(profile_id=value)), "C10", f"Invalid manifest profile Id: {value}")


def test_c10_profile_ids_are_configurable() -> None:
    extra = "urn:nhs-en:profile:IntegratedUrgentCareReport-v3-1"
    validate(build_request(profile_id=extra), DEFAULT.replace(profile_ids=(*DEFAULT.profile_ids, extra)))
    for profile in DEFAULT.profile_ids:
        validate(build_request(profile_id=profile))


def test_c11_encrypted_payload() -> None:
    root = build_request()
    find(root, "itk:header/itk:manifest/itk:manifestitem").set("encrypted", "true")
    assert_fault(reject(root), "C11", "Encrypted payloads are not supported", None)
    find(root, "itk:header/itk:manifest/itk:manifestitem").set("encrypted", "false")
    validate(root)


def test_c12_audit_identity_missing() -> None:
    assert_fault(reject(build_request(audit_ids=None)), "C12", "Audit Identity missing", None)
    assert reject(build_request(audit_ids=[])).rule == "C12"


def test_c13_no_ods_audit_identity() -> None:
    fault = reject(build_request(audit_ids=["urn:nhs-uk:identity:INVALID"]))
    assert_fault(fault, "C13", "Invalid Audit Identity value: urn:nhs-uk:identity:INVALID")
    assert reject(build_request(audit_ids=["urn:nhs-uk:identity:ods:"])).rule == "C13"


def test_c13_every_audit_id_is_considered() -> None:
    message = validate(build_request(audit_ids=["urn:nhs-uk:identity:other:1", "urn:nhs-uk:identity:ods:RYE"]))
    assert message.sender == "urn:nhs-uk:identity:ods:RYE"


def test_c14_sender_ods_allow_list() -> None:
    settings = Settings(sender_ods_list=("RYE", "5L399"))
    fault = reject(build_request(audit_ids=["urn:nhs-uk:identity:ods:XSEND"]), settings)
    assert_fault(fault, "C14", "Invalid Audit Identity value: urn:nhs-uk:identity:ods:XSEND")
    validate(build_request(audit_ids=["urn:nhs-uk:identity:ods:rye"]), settings)
    validate(build_request(audit_ids=["urn:nhs-uk:identity:ods:5L399:445510770"]), settings)


def test_c15_interaction_missing() -> None:
    assert_fault(reject(build_request(interaction=None)), "C15", "Interaction missing", None)
    assert reject(build_request(interaction="")).rule == "C15"
    root = build_request()
    remove(root, "itk:header/itk:handlingSpecification")
    assert reject(root).rule == "C15"


def test_c15_specs_are_looked_up_by_key_in_any_order() -> None:
    root = build_request(extra_specs=[("urn:nhs-itk:ns:201005:ackrequested", "false")])
    handling = find(root, "itk:header/itk:handlingSpecification")
    interaction = spec(root)
    handling.remove(interaction)
    handling.append(interaction)  # the ackrequested spec now comes first
    assert validate(root).interaction.endswith("primaryOutofHourRecipientNHS111CDADocument-v2-0")


@pytest.mark.parametrize(
    "value",
    [
        "urn:nhs-itk:interaction:unknownThing-v9-9",
        "urn:nhs-itk:interaction:primaryRequestforAmbulanceDispatch-v2-0",
        "urn:nhs-itk:interaction:primaryNHS111RepeatCallerSyncQueryResp-v1-0",
        "urn:nhs-itk:interaction:copyRecipientNHS111CDADocumentResponse-v2-0",
        "urn:nhs-itk:interaction:primaryNHS111nullifyDocument-v1-0",
        "urn:other:primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0",
    ],
)
def test_c16_unsupported_interaction(value: str) -> None:
    assert_fault(reject(build_request(interaction=value)), "C16", f"Unsupported interaction: {value}")


@pytest.mark.parametrize(
    ("value", "event", "known"),
    [
        ("urn:nhs-itk:interaction:primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0", "referral-1", True),
        ("primaryEmergencyDepartmentRecipientNHS111CDADocument-v2-0", "referral-1", True),
        ("URN:NHS-ITK:INTERACTION:PRIMARYOUTOFHOURRECIPIENTNHS111CDADOCUMENT-V2-0", "referral-1", True),
        ("urn:nhs-itk:interaction:copyRecipientNHS111CDADocument-v2-0", "discharge-details-1", True),
        ("urn:nhs-itk:interaction:primaryNHS111RepeatCallerDocumentSet-v1-0", "referral-1", True),
        ("urn:nhs-itk:interaction:copyRecipientIntegratedUrgentCareCDADocument-v3-0", "discharge-details-1", True),
        ("urn:nhs-itk:interaction:primaryOutOfHoursRecipientNHS111CDADocument-v2-0", "referral-1", False),
        ("urn:nhs-itk:interaction:copyRecipientNHS111CDADocument-v3-0", "discharge-details-1", False),
    ],
)
def test_interactions_are_matched_tolerantly(value: str, event: str, known: bool) -> None:
    matched = classify_interaction(value)
    assert matched is not None
    assert (matched.event, matched.known) == (event, known)


def test_unknown_but_accepted_interaction_is_a_warning() -> None:
    value = "urn:nhs-itk:interaction:primaryOutOfHoursRecipientNHS111CDADocument-v2-0"
    message = validate(build_request(interaction=value))
    assert message.interaction == value
    assert len(message.warnings) == 1 and "not in the published table" in message.warnings[0]


def test_copy_interaction_is_discharge_details() -> None:
    message = validate(build_request(interaction="copyRecipientNHS111CDADocument-v2-0"))
    assert message.event == "discharge-details-1"


def test_requested_acknowledgements_are_recorded_and_warned() -> None:
    root = build_request(
        extra_specs=[("urn:nhs-itk:ns:201005:ackrequested", "true"), ("urn:nhs-itk:ns:201005:infackrequested", "1")]
    )
    message = validate(root)
    assert message.ack_requested and message.inf_ack_requested
    assert [w.split(" ")[0] for w in message.warnings] == ["business", "infrastructure"]
    quiet = validate(build_request(extra_specs=[("urn:nhs-itk:ns:201005:ackrequested", "false")]))
    assert not quiet.ack_requested and quiet.warnings == ()


# -- C17 and E1: the addressing allow-list (matching details: test_allowlist.py) --------------------------------


def test_c17_no_address_on_the_allow_list() -> None:
    settings = Settings(itk_ods_code_list=("EM396",), itk_dos_id_list=("26428",))
    root = build_request(addresses=[("urn:nhs-uk:addressing:ods:ZZZ99", None), ("999999999", DOS_TYPE)])
    fault = reject(root, settings, AllowList(settings))
    assert_fault(fault, "C17", "Message rejected", "Both ODS code (ZZZ99) and DOS ID (999999999) are invalid")
    assert fault.relates_to == find(root, "wsa:MessageID").text
    validate(build_request(addresses=[("26428", DOS_TYPE)]), settings, AllowList(settings))


def test_e1_remote_allow_list_not_loaded_yet() -> None:
    settings = Settings(itk_external_configuration_url="http://127.0.0.1:9/allow-list.json")

    def unreachable(url: str) -> bytes:
        raise OSError("connection refused")

    allow_list = AllowList(settings, fetch=unreachable)
    allow_list.refresh()
    root = build_request()
    fault = reject(root, settings, allow_list)
    assert_fault(fault, "E1", "Temporary processing error, please retry", None, code=2100, faultcode=FaultCode.SERVER)
    assert fault.relates_to == find(root, "wsa:MessageID").text


# -- C18: the Distribution Envelope schema ----------------------------------------------------------------------


def test_c18_unknown_element_in_the_itk_header() -> None:
    root = build_request()
    etree.SubElement(find(root, "itk:header"), f"{{{ITK}}}breakSchema")
    fault = reject(root)
    assert_fault(fault, "C18", "schema validation failed", None)
    assert "breakSchema" in (fault.diagnostic or "")


@pytest.mark.parametrize(
    "change",
    [
        "lowercase-trackingid",
        "five-audit-ids",
        "no-mimetype",
        "two-documents-in-one-payload",
        "payload-id-not-ncname",
        "unknown-attribute",
    ],
)
def test_c18_schema_violations(change: str) -> None:
    assert reject(_schema_violation(change)).rule == "C18"


def _schema_violation(change: str) -> etree._Element:
    if change == "five-audit-ids":
        return build_request(audit_ids=[f"urn:nhs-uk:identity:ods:X{i}" for i in range(5)])
    root = build_request()
    if change == "lowercase-trackingid":
        find(root, "itk:header").set("trackingid", new_id().lower())
    elif change == "no-mimetype":
        del find(root, "itk:header/itk:manifest/itk:manifestitem").attrib["mimetype"]
    elif change == "two-documents-in-one-payload":
        find(root, "itk:payloads/itk:payload").append(clinical_document())
    elif change == "payload-id-not-ncname":
        find(root, "itk:payloads/itk:payload").set("id", "1-not-an-id")
        find(root, "itk:header/itk:manifest/itk:manifestitem").set("id", "1-not-an-id")
    elif change == "unknown-attribute":
        find(root, "itk:header/itk:addresslist/itk:address").set("extra", "x")
    return root


def test_c18_own_schema_agrees_with_the_published_one() -> None:
    """wsdl/itk-distribution-envelope.xsd is ours, written from the facts; it must judge like the published one."""
    published = schemas._compile(require_shared("schemas", "iuc", "Schemas", "distributionEnvelope-v2-0.xsd"))
    own = schemas.distribution_envelope_schema()
    cases = {"valid": build_request()}
    cases.update(
        {
            change: _schema_violation(change)
            for change in (
                "lowercase-trackingid",
                "five-audit-ids",
                "no-mimetype",
                "two-documents-in-one-payload",
                "payload-id-not-ncname",
                "unknown-attribute",
            )
        }
    )
    broken = build_request()
    etree.SubElement(find(broken, "itk:header"), f"{{{ITK}}}breakSchema")
    cases["breakSchema"] = broken
    for name, root in cases.items():
        de = schemas.envelope_for_schema_check(find(root, "soap:Body/itk:DistributionEnvelope"))
        assert bool(own.errors(de)) == bool(published.errors(de)) == (name != "valid"), name


def test_c18_payload_content_is_not_validated_laxly() -> None:
    """The known false positive: xsi:type="ST" inside the CDA must not fail the envelope schema."""
    document = clinical_document()
    title = document.find("hl7:title", NS)
    title.set("{http://www.w3.org/2001/XMLSchema-instance}type", "ST")
    validate(build_request(documents=[document]))


# -- D1-D3: payloads and ClinicalDocuments -------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["base64", "gzip"])
def test_encoded_payloads_are_decoded(encoding: str) -> None:
    message = validate(build_request(encoding=encoding))
    assert etree.QName(message.selected).localname == "ClinicalDocument"


@pytest.mark.parametrize(
    ("encoding", "text"),
    [("base64", "not base64 at all!"), ("gzip", base64.b64encode(b"not gzip").decode()), ("base64", "PHg+")],
)
def test_d1_payload_cannot_be_decoded(encoding: str, text: str) -> None:
    root = build_request(encoding=encoding)
    find(root, "itk:payloads/itk:payload").text = text
    assert_fault(reject(root), "D1", "Payload could not be decoded", None)


def test_d2_no_clinical_document() -> None:
    root = build_request()
    payload = find(root, "itk:payloads/itk:payload")
    payload.remove(payload[0])
    payload.text = "nothing here"
    assert_fault(reject(root), "D2", "Unable to find ClinicalDocument element", "ClinicalDocument missing")


@pytest.mark.parametrize("value", [None, "", "yesterday", "2024-01-02"])
def test_d3_effective_time_missing_or_invalid(value: str | None) -> None:
    document = clinical_document()
    time_element = document.find("hl7:effectiveTime", NS)
    if value is None:
        del time_element.attrib["value"]
    else:
        time_element.set("value", value)
    assert_fault(reject(build_request(documents=[document])), "D3", "Invalid ClinicalDocument effectiveTime", None)


def test_newest_document_is_selected() -> None:
    documents = [
        clinical_document("20240102103000+0000", title="first"),
        clinical_document("20240102113000+0100", title="same instant, later in order"),
        clinical_document("20240102103001+0000", title="newest"),
    ]
    message = validate(build_request(documents=documents, interaction="primaryNHS111RepeatCallerDocumentSet-v1-0"))
    assert len(message.documents) == 3
    assert message.selected.findtext("hl7:title", namespaces=NS) == "Synthetic NHS 111 newest"


# -- D4-D6: schema rules on the selected document -----------------------------------------------------------------


def test_d4_document_invalid_against_the_cda_schema() -> None:
    document = clinical_document()
    document.remove(document.find("hl7:confidentialityCode", NS))
    fault = reject(build_request(documents=[document]), schema_settings())
    assert_fault(fault, "D4", "schema validation failed", None)
    assert "confidentialityCode" in (fault.diagnostic or "")
    validate(build_request(documents=[document]))  # without the schema pack D4 is skipped


def test_d4_only_the_selected_document_is_validated() -> None:
    old = clinical_document("20200101000000+0000")
    old.remove(old.find("hl7:confidentialityCode", NS))
    validate(build_request(documents=[old, clinical_document()]), schema_settings())


def test_d4_missing_schema_pack_skips_the_rule() -> None:
    document = clinical_document()
    document.remove(document.find("hl7:confidentialityCode", NS))
    validate(build_request(documents=[document]), Settings(schema_dir="/nonexistent/schema/pack"))


class _FakeLevel2:
    def __init__(self, errors: list[str] | Exception) -> None:
        self._errors = errors

    def errors(self, document: etree._Element) -> list[str]:
        if isinstance(self._errors, Exception):
            raise self._errors
        return self._errors


@pytest.mark.parametrize(
    ("mode", "errors", "rule", "warnings"),
    [
        ("off", ["bad"], None, 0),
        ("warn", ["bad", "worse"], None, 1),
        ("warn", [], None, 0),
        ("reject", ["bad"], "D5", 0),
        ("reject", RuntimeError("saxon crashed"), None, 1),
    ],
)
def test_d5_level2_modes(
    monkeypatch: pytest.MonkeyPatch, mode: str, errors: list[str] | Exception, rule: str | None, warnings: int
) -> None:
    monkeypatch.setattr(schemas, "level2_validator", lambda schema_dir: _FakeLevel2(errors))
    settings = Settings(cda_level2_validation=mode)
    if rule:
        fault = reject(build_request(), settings)
        assert_fault(fault, rule, "schema validation failed", "CDA level 2: bad")
        return
    message = validate(build_request(), settings)
    assert len(message.warnings) == warnings
    assert all(w.startswith("D5:") for w in message.warnings)


def test_d5_is_skipped_without_an_xslt2_processor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "saxonche", None)  # "import saxonche" now raises ImportError
    schemas.level2_validator.cache_clear()
    try:
        assert schemas.level2_validator(str(require_shared("schemas"))) is None
        validate(build_request(), schema_settings(cda_level2_validation="reject"))
    finally:
        schemas.level2_validator.cache_clear()


_LEVEL2_XSLT = """<xsl:stylesheet version="2.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
    xmlns:h="urn:hl7-org:v3">
  <xsl:template match="/h:ClinicalDocument">
    <out xmlns="urn:example:level2"><xsl:value-of select="string-join(h:title, '')"/></out>
  </xsl:template>
</xsl:stylesheet>"""
_LEVEL2_XSD = """<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:example:level2"
    elementFormDefault="qualified">
  <xs:element name="out"><xs:simpleType><xs:restriction base="xs:string">
    <xs:pattern value="Synthetic.*"/></xs:restriction></xs:simpleType></xs:element>
</xs:schema>"""


def test_d5_level2_validator_runs_an_xslt2_transform(tmp_path: Path) -> None:
    """Only where the optional saxonche package is installed: a stand-in XSLT 2.0 transform and schema."""
    pytest.importorskip("saxonche")
    (tmp_path / "t.xsl").write_text(_LEVEL2_XSLT)
    (tmp_path / "s.xsd").write_text(_LEVEL2_XSD)
    level2 = schemas.Level2Validator(tmp_path / "t.xsl", schemas._compile(tmp_path / "s.xsd"))
    assert level2.errors(clinical_document()) == []
    other = clinical_document()
    other.find("hl7:title", NS).text = "Other"
    assert "Other" in level2.errors(other)[0]


def _with_pathways(pathways: str) -> etree._Element:
    return build_request(documents=[clinical_document(pathways_base64=pathways)])


def test_d6_pathways_attachment_invalid_is_a_warning() -> None:
    encoded = base64.b64encode(pathways_case(valid=False)).decode()
    message = validate(_with_pathways(encoded), schema_settings())
    assert len(message.warnings) == 1 and message.warnings[0].startswith("D6: Pathways attachment invalid")


def test_d6_pathways_attachment_undecodable_is_a_warning() -> None:
    message = validate(_with_pathways(base64.b64encode(b"<not xml").decode()), schema_settings())
    assert message.warnings == ("D6: Pathways attachment could not be decoded; delivered without Pathways data",)


def test_d6_no_attachment_or_no_schema_pack_means_no_warning() -> None:
    assert validate(build_request(), schema_settings()).warnings == ()
    assert validate(_with_pathways("!!!")).warnings == ()


def test_d6_valid_corpus_attachment_has_no_warning() -> None:
    path = require_shared("corpus", "reference", "primary-emergency-itk-request.xml")
    message = validate(path.read_bytes(), schema_settings())
    assert message.warnings == ()
    tpp = require_shared("corpus", "reference", "tpp-ooh-T6-skillset-itk-request.xml")
    assert [w[:31] for w in validate(tpp.read_bytes(), schema_settings()).warnings] == [
        "D6: Pathways attachment invalid"
    ]


# -- E2 and robustness ----------------------------------------------------------------------------------------------


def test_e2_unexpected_error_becomes_an_internal_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(itk, "_check_manifest", broken)
    root = build_request()
    fault = reject(root)
    assert (fault.rule, fault.error_code, fault.faultcode) == ("E2", 2200, FaultCode.SERVER)
    assert fault.relates_to == find(root, "wsa:MessageID").text
    assert (fault.diagnostic or "").startswith("Internal Error ")


def _envelope_elements(root: etree._Element) -> list[etree._Element]:
    """Every element of the request outside the CDA content (the ClinicalDocument element itself included)."""
    return [
        e
        for e in root.iter(etree.Element)
        if not str(e.tag).startswith(f"{{{HL7}}}") or etree.QName(e).localname == "ClinicalDocument"
    ]


def _mutants(root: etree._Element) -> list[etree._Element]:
    """Copies of ``root`` with one element (outside the CDA) removed, or one attribute blanked or garbled."""
    out = []
    for index, original in enumerate(_envelope_elements(root)[1:], start=1):
        mutant = copy.deepcopy(root)
        target = _envelope_elements(mutant)[index]
        target.getparent().remove(target)
        out.append(mutant)
        for name in original.attrib:
            for value in ("", "x", "-1"):
                mutant = copy.deepcopy(root)
                _envelope_elements(mutant)[index].set(name, value)
                out.append(mutant)
    return out


@pytest.mark.parametrize("settings", [DEFAULT, STRICT], ids=["default", "strict"])
def test_no_rule_raises_anything_but_itk_fault(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    crashes = []
    original = itk._validate

    def spy(*args: object, **kwargs: object) -> ItkMessage:
        try:
            return original(*args, **kwargs)  # type: ignore[arg-type]
        except ItkFault:
            raise
        except Exception as exc:  # pragma: no cover - a failure of this test
            crashes.append(repr(exc))
            raise

    monkeypatch.setattr(itk, "_validate", spy)
    for mutant in _mutants(build_request()):
        with contextlib.suppress(ItkFault):
            validate(mutant, settings)
    assert crashes == []


# -- relates_to, digest, extracted fields ------------------------------------------------------------------------


@pytest.mark.parametrize("rule_trigger", ["A5", "B3", "C4", "C16", "D2"])
def test_faults_after_the_message_id_was_read_relate_to_it(rule_trigger: str) -> None:
    message_id = new_id()
    root = build_request(message_id=f"  {message_id} ")
    if rule_trigger == "A5":
        etree.SubElement(find(root, "soap:Header"), "{urn:x}H").set(f"{{{SOAP11}}}mustUnderstand", "1")
    elif rule_trigger == "B3":
        find(root, "wsa:To").text = "nope"
    elif rule_trigger == "C4":
        find(root, "itk:payloads").set("count", "7")
    elif rule_trigger == "C16":
        spec(root).set("value", "unknown")
    else:
        payload = find(root, "itk:payloads/itk:payload")
        payload.remove(payload[0])
    fault = reject(root)
    assert (fault.rule, fault.relates_to) == (rule_trigger, message_id)


def test_digest_ignores_soap_header_changes_but_not_envelope_content() -> None:
    root = build_request()
    first = validate(root).digest
    resend = copy.deepcopy(root)
    now = datetime.now(UTC)
    find(resend, "wsse:Security/wsu:Timestamp/wsu:Created").text = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    find(resend, "wsa:MessageID").text = new_id()
    assert validate(resend).digest == first
    changed = copy.deepcopy(root)
    find(changed, "itk:header").set("trackingid", new_id())
    assert validate(changed).digest != first


def test_message_fields() -> None:
    root = build_request(
        addresses=[
            ("urn:nhs-uk:addressing:ods:RSHSO14A:extra", None),
            ("2000006423", DOS_TYPE),
            ("urn:nhs-uk:addressing:ods:EM396", "2.16.840.1.113883.2.1.3.2.4.18.22"),
            ("mailbox", "2.16.840.1.113883.2.1.3.2.4.21.1"),
        ],
        sender_address="urn:nhs-uk:addressing:ods:5L399:445510770",
    )
    message = validate(root, STRICT)
    assert message.ods_codes == ("RSHSO14A", "EM396")
    assert message.dos_ids == ("2000006423",)
    assert len(message.addresses) == 4
    assert message.sender_address == "urn:nhs-uk:addressing:ods:5L399:445510770"
    assert message.username == "CN=XSEND.synthetic.test"
    assert message.tracking_id == find(root, "itk:header").get("trackingid")
    assert message.service == message.action == "urn:nhs-itk:services:201005:SendNHS111Report-v2-0"


def test_missing_shared_folder_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception):
        require_shared("no-such-folder")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_shared("no-such-folder")


# -- the corpus --------------------------------------------------------------------------------------------------


def corpus_files() -> list[Path]:
    files = sorted(require_shared("corpus", "reference").glob("*-itk-request.xml"))
    assert files, "no *-itk-request.xml in the corpus"
    return files


def _refreshed_for_strict(raw: bytes) -> bytes | None:
    """The request with a current Timestamp and wsa:To = the configured endpoint (as wire_check --strict does);
    ``None`` for requests without a Timestamp, which the strict profile refuses by design."""
    root = etree.fromstring(raw)
    header = root.find(f"{{{SOAP11}}}Header")
    timestamp = header.find(f"{{{WSSE}}}Security/{{{WSU}}}Timestamp") if header is not None else None
    to = header.find(f"{{{WSA}}}To") if header is not None else None
    if timestamp is None or to is None:
        return None
    now = datetime.now(UTC)
    timestamp.find(f"{{{WSU}}}Created").text = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    timestamp.find(f"{{{WSU}}}Expires").text = (now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    to.text = ENDPOINT
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def test_every_corpus_request_passes_with_default_settings() -> None:
    for path in corpus_files():
        message = validate(path.read_bytes())
        assert message.event == "referral-1", path.name


def test_every_corpus_request_passes_with_the_schema_pack() -> None:
    settings = schema_settings()
    for path in corpus_files():
        message = validate(path.read_bytes(), settings)
        assert all(w.startswith("D6:") for w in message.warnings), (path.name, message.warnings)


def test_corpus_requests_pass_the_strict_profile_after_refreshing_timestamp_and_to() -> None:
    settings = schema_settings(soap_validation_enabled=True)
    checked = 0
    for path in corpus_files():
        raw = _refreshed_for_strict(path.read_bytes())
        if raw is not None:
            validate(raw, settings)
            checked += 1
    assert checked >= 3


def test_corpus_repeat_caller_set_selects_the_newest_document() -> None:
    message = validate(require_shared("corpus", "reference", "repeat-caller-itk-request.xml").read_bytes())
    assert len(message.documents) == 6
    times = [d.find("hl7:effectiveTime", NS).get("value") for d in message.documents]
    assert message.selected.find("hl7:effectiveTime", NS).get("value") == max(times)


def test_corpus_validation_is_fast() -> None:
    """A ~110 KB message validates in a few milliseconds without D4/D5 (measured: about 1 ms)."""
    raw = require_shared("corpus", "reference", "primary-emergency-itk-request.xml").read_bytes()
    root = parse_request(raw, DEFAULT)
    validate_request(root, DEFAULT, UNCONFIGURED)  # compile the envelope schema
    started = time.perf_counter()
    for _ in range(20):
        validate_request(root, DEFAULT, UNCONFIGURED)
    assert (time.perf_counter() - started) / 20 < 0.05


def test_an_overlong_message_id_is_refused_as_invalid_not_retryable() -> None:
    """The store indexes MessageID; an overlong one could never be stored, so it is a 1000, never a 2100."""
    root = build_request()
    find(root, "wsa:MessageID").text = "uuid:" + "A" * 300
    with pytest.raises(ItkFault) as caught:
        validate_request(root, Settings(), AllowList(Settings()))
    assert (caught.value.error_code, caught.value.rule) == (1000, "B1")
    assert caught.value.text == "Invalid MessageId: longer than 255 characters"


# -- D6 and the mapping read the Pathways case once, the same way ---------------------------------------------------


@pytest.mark.parametrize("pair", corpus_pairs())
def test_the_mapping_is_given_the_case_d6_read_and_maps_it_as_from_the_raw_request(pair: str) -> None:
    raw = require_shared("corpus", "reference", f"{pair}{REQUEST_SUFFIX}").read_bytes()
    settings = schema_settings(itk_accept_any_address=True)
    message = validate(raw, settings)
    assert message.pathways_case is not UNREAD
    now = datetime(2026, 1, 2, tzinfo=UTC)
    handed_over = conversion.convert_message(message, config=settings, now=now, id_seed="seed")
    read_again = conversion.convert(raw, config=settings, now=now, id_seed="seed")
    assert handed_over == read_again


def test_d6_warns_of_a_case_the_mapping_cannot_read_and_the_bundle_has_no_triage() -> None:
    # lxml would read this UTF-16 document; the mapping reads attachments as UTF-8 only (mapping.md 3.18).
    utf16 = pathways_case().decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16")
    message = validate(_with_pathways(base64.b64encode(utf16).decode()), schema_settings())
    assert message.warnings == ("D6: Pathways attachment could not be decoded; delivered without Pathways data",)
    assert message.pathways_case is None


def test_d6_reads_base64_as_the_mapping_does() -> None:
    encoded = base64.b64encode(pathways_case()).decode().rstrip("=")  # padding is optional (mapping.md 3.18)
    message = validate(_with_pathways(f" {encoded[:10]}\n{encoded[10:]}! "), schema_settings())
    assert [warning[:31] for warning in message.warnings] == ["D6: Pathways attachment invalid"]  # read, not complete
    assert message.pathways_case is not None and message.pathways_case.tag.endswith("}PathwaysCase")


def test_without_a_schema_pack_the_mapping_reads_the_case_itself() -> None:
    message = validate(_with_pathways(base64.b64encode(pathways_case()).decode()))
    assert message.pathways_case is UNREAD
