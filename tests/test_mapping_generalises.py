"""The mapping beyond the corpus: synthetic variations of corpus documents convert and validate.

Each test takes a corpus request from ``../shared`` (read in place), changes it with lxml (patients are
synthetic: every NHS number is replaced by one in the test range 999 000 0000 - 999 999 9999) and checks that it
converts without error, that the Bundle validates as FHIR STU3 with every reference resolved, and the mapping.md
rule the variation exercises.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require_shared
from lxml import etree

from adaptor.delivery.conversion import convert, validate_bundle

HL7 = "urn:hl7-org:v3"
ITK = "urn:nhs-itk:ns:201005"
NS = {"hl7": HL7, "itk": ITK}
NHS_NUMBER_ROOTS = ("2.16.840.1.113883.2.1.4.1", "2.16.840.1.113883.2.1.3.2.4.18.23")
UPPER_UUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$")

Json = dict[str, Any]
Element = etree._Element


# -- building variations ---------------------------------------------------------------------------------------


@functools.cache
def _corpus_bytes(pair: str) -> bytes:
    return require_shared("corpus", "reference", f"{pair}-itk-request.xml").read_bytes()


def load(pair: str = "primary-emergency") -> Element:
    """A fresh, mutable copy of a corpus request whose patients carry test-range NHS numbers."""
    root = etree.fromstring(_corpus_bytes(pair))
    for index, id_ in enumerate(root.iter(f"{{{HL7}}}id")):
        if id_.get("root") in NHS_NUMBER_ROOTS:
            id_.set("extension", f"99900{index:05d}")
    return root


def cd(root: Element) -> Element:
    """The (single) ClinicalDocument of a request."""
    (document,) = root.iter(f"{{{HL7}}}ClinicalDocument")
    return document


def find(element: Element, path: str) -> Element:
    found = element.xpath(path, namespaces=NS)
    assert found, f"{path} not found"
    return found[0]


def remove(element: Element, path: str) -> None:
    found = element.xpath(path, namespaces=NS)
    assert found, f"{path} not found"
    for node in found:
        node.getparent().remove(node)


def hl7(xml: str) -> Element:
    """Parse a CDA fragment: ``xml`` gets the CDA namespace as its default namespace."""
    tag_end = re.search(r"[\s/>]", xml[1:])
    assert tag_end is not None, xml
    position = tag_end.start() + 1
    return etree.fromstring(f'{xml[:position]} xmlns="{HL7}"{xml[position:]}')


def converted(source: Element | bytes) -> Json:
    """Convert, and require a valid Bundle whose references all resolve."""
    data = source if isinstance(source, bytes) else etree.tostring(source)
    bundle = convert(data)
    problems = validate_bundle(bundle)
    assert problems == [], problems
    return bundle


def resources(bundle: Json, resource_type: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def only(bundle: Json, resource_type: str) -> Json:
    (resource,) = resources(bundle, resource_type)
    return resource


def resolve(bundle: Json, reference: Json) -> Json:
    (target,) = [e["resource"] for e in bundle["entry"] if e["fullUrl"] == reference["reference"]]
    return target


def types(bundle: Json) -> list[str]:
    return [e["resource"]["resourceType"] for e in bundle["entry"]]


# -- the unchanged base ----------------------------------------------------------------------------------------


def test_base_variation_converts() -> None:
    bundle = converted(load())
    assert only(bundle, "Patient")["identifier"][0]["value"].startswith("999")


# -- NHS number ------------------------------------------------------------------------------------------------


def test_no_nhs_number() -> None:
    root = load()
    remove(cd(root), "hl7:recordTarget/hl7:patientRole/hl7:id[@root = '2.16.840.1.113883.2.1.3.2.4.18.23']")
    patient = only(converted(root), "Patient")
    assert "identifier" not in patient  # the local id (.18.24) is never mapped
    assert patient["active"] is True and patient["name"]


def test_verified_nhs_number() -> None:
    root = load()
    find(cd(root), "hl7:recordTarget/hl7:patientRole/hl7:id[@root = '2.16.840.1.113883.2.1.3.2.4.18.23']").set(
        "root", "2.16.840.1.113883.2.1.4.1"
    )
    (identifier,) = only(converted(root), "Patient")["identifier"]
    coding = identifier["extension"][0]["valueCodeableConcept"]["coding"][0]
    assert (coding["code"], coding["display"]) == ("01", "Number present and verified")


# -- information recipients ------------------------------------------------------------------------------------


def test_several_information_recipients() -> None:
    root = load()
    document = cd(root)
    recipients = document.xpath("hl7:informationRecipient", namespaces=NS)
    assert len(recipients) == 2
    copied = copy.deepcopy(recipients[0])
    copied.set("typeCode", "TRC")  # a copy recipient: not a HealthcareService
    recipients[-1].addnext(copied)
    telecom_only = hl7(
        '<informationRecipient><intendedRecipient><telecom value="tel:01130000000" use="WP"/>'
        "</intendedRecipient></informationRecipient>"
    )  # no @typeCode: PRCP by default
    copied.addnext(telecom_only)
    bare = hl7("<informationRecipient typeCode='PRCP'><intendedRecipient/></informationRecipient>")
    telecom_only.addnext(bare)
    bundle = converted(root)

    services = resources(bundle, "HealthcareService")
    assert [s.get("name") for s in services] == [
        "Thames Medical Practice",
        "Medway Kent Out of Hours Clinic",
        None,
        None,
    ]
    assert services[2]["telecom"] == [{"system": "phone", "value": "tel:01130000000", "use": "work"}]
    location = resolve(bundle, services[2]["location"][0])
    assert location["telecom"] == services[2]["telecom"] and "managingOrganization" not in location
    assert "location" not in services[3] and "providedBy" not in services[3]  # nothing to locate it by
    referral = only(bundle, "ReferralRequest")
    recipients_resolved = [resolve(bundle, r)["resourceType"] for r in referral["recipient"]]
    assert recipients_resolved == ["Practitioner"] + ["HealthcareService"] * 4
    assert [resolve(bundle, r) for r in referral["recipient"][1:]] == services


# -- input shapes ----------------------------------------------------------------------------------------------


def test_bare_clinical_document() -> None:
    bundle = converted(etree.tostring(cd(load())))
    header = bundle["entry"][0]["resource"]
    assert UPPER_UUID.match(header["id"])
    assert bundle["entry"][0]["fullUrl"] == f"urn:uuid:{header['id']}"
    assert header["event"]["code"] == "referral-1"
    assert "destination" not in header
    assert only(bundle, "Encounter")["type"] == [{"text": "111 Encounter Referral"}]


def test_bare_distribution_envelope() -> None:
    root = load()
    (envelope,) = root.iter(f"{{{ITK}}}DistributionEnvelope")
    bundle = converted(etree.tostring(envelope))
    header = bundle["entry"][0]["resource"]
    assert UPPER_UUID.match(header["id"])
    assert header["destination"] == [{"endpoint": "urn:nhs-uk:addressing:ods:EM396"}]
    assert header["reason"]["coding"][0]["code"].endswith("primaryEmergencyDepartmentRecipientNHS111CDADocument-v2-0")


def test_copy_interaction_is_discharge_details() -> None:
    root = load()
    spec = find(root, "//itk:spec[@key = 'urn:nhs-itk:ns:201005:interaction']")
    spec.set("value", "urn:nhs-itk:interaction:copyRecipientNHS111CDADocument-v2-0")
    bundle = converted(root)
    assert bundle["entry"][0]["resource"]["event"]["code"] == "discharge-details-1"
    assert only(bundle, "Encounter")["type"] == [{"text": "111 Encounter Copy for Information"}]


def test_dos_address_listed_first() -> None:
    root = load()
    addresslist = find(root, "//itk:addresslist")
    dos = etree.SubElement(addresslist, f"{{{ITK}}}address", type="2.16.840.1.113883.2.1.3.2.4.18.44", uri="12345")
    addresslist.insert(0, dos)
    header = converted(root)["entry"][0]["resource"]
    assert header["destination"] == [{"endpoint": "urn:nhs-uk:addressing:ods:EM396:DOSServiceID:12345"}]


# -- time zones ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "instant"),
    [
        ("20210701120000", "2021-07-01T11:00:00"),  # British Summer Time
        ("20210115120000", "2021-01-15T12:00:00"),  # Greenwich Mean Time
        ("202110311230", "2021-10-31T12:30:00"),  # the day the clocks go back, after the change
    ],
)
def test_effective_time_without_offset_is_london_time(value: str, instant: str) -> None:
    root = load()
    document = cd(root)
    find(document, "hl7:effectiveTime").set("value", value)
    find(document, "hl7:componentOf/hl7:encompassingEncounter/hl7:effectiveTime/hl7:low").set("value", value)
    bundle = converted(root)
    assert bundle["entry"][0]["resource"]["timestamp"] == f"{instant}.000+00:00"
    assert only(bundle, "Composition")["date"] == f"{instant}+00:00"
    assert only(bundle, "List")["date"] == f"{instant}+00:00"
    assert only(bundle, "Encounter")["period"]["start"] == f"{instant}+00:00"
    assert only(bundle, "ReferralRequest")["occurrencePeriod"] == {"start": f"{instant}+00:00"}


# -- several patients ------------------------------------------------------------------------------------------


def test_several_record_targets_give_a_group() -> None:
    root = load()
    document = cd(root)
    first = find(document, "hl7:recordTarget")
    second = copy.deepcopy(first)
    find(second, "hl7:patientRole/hl7:id[@root = '2.16.840.1.113883.2.1.3.2.4.18.23']").set("extension", "9990000999")
    name = find(second, "hl7:patientRole/hl7:patient/hl7:name")
    find(name, "hl7:given").text = "Second"
    find(name, "hl7:family").text = "Synthetic"
    find(second, "hl7:patientRole/hl7:providerOrganization/hl7:name").text = "Second Surgery"
    first.addnext(second)
    bundle = converted(root)

    group = only(bundle, "Group")
    patients = resources(bundle, "Patient")
    assert group["type"] == "person" and group["active"] is True and group["actual"] is True
    assert [resolve(bundle, m["entity"]) for m in group["member"]] == patients
    assert [p["name"][0]["given"] for p in patients] == [["Blogg"], ["Second"]]
    encounter = only(bundle, "Encounter")
    assert resolve(bundle, encounter["subject"]) is group
    for resource_type in ("ReferralRequest", "Condition", "Composition", "List", "ProcedureRequest"):
        assert resolve(bundle, only(bundle, resource_type)["subject"]) is group, resource_type
    # Patient-only references point at the first member.
    consent = only(bundle, "Consent")
    assert resolve(bundle, consent["patient"]) is patients[0]
    assert resolve(bundle, consent["consentingParty"][0]) is patients[0]
    assert resolve(bundle, resources(bundle, "RelatedPerson")[0]["patient"]) is patients[0]
    appointment = only(bundle, "Appointment")
    assert resolve(bundle, appointment["participant"][0]["actor"]) is patients[0]
    # Each member has its GP practice and its Encounter location (section 3.4).
    gps = [resolve(bundle, p["generalPractitioner"][0])["name"] for p in patients]
    assert gps == ["Medway Medical Practice", "Second Surgery"]
    statuses = [entry["status"] for entry in encounter["location"]]
    assert statuses == ["active", "active", "completed"]
    managing = [resolve(bundle, resolve(bundle, e["location"]).get("managingOrganization", {"reference": ""}))
                for e in encounter["location"][:2]]
    assert [o["name"] for o in managing] == gps
    # Bundle order (section 1 step 6): the Group, then each member followed by its Organizations.
    start = types(bundle).index("Group")
    assert types(bundle)[start : start + 5] == ["Group", "Patient", "Organization", "Patient", "Organization"]
    # CarePlan authors: the managing organisation of each location that has one.
    (care_plan,) = resources(bundle, "CarePlan")
    assert [resolve(bundle, a)["name"] for a in care_plan["author"]] == gps


# -- missing optional parts ------------------------------------------------------------------------------------


def test_missing_optional_parts() -> None:
    root = load()
    document = cd(root)
    remove(document, "hl7:custodian")
    remove(document, "hl7:participant")
    remove(document, "hl7:componentOf/hl7:encompassingEncounter/hl7:location")
    remove(document, "hl7:componentOf/hl7:encompassingEncounter/hl7:dischargeDispositionCode")
    bundle = converted(root)

    assert resources(bundle, "ProcedureRequest") == []
    referral = only(bundle, "ReferralRequest")
    assert "supportingInfo" not in referral  # never a reference to nothing (section 6.12)
    assert "onBehalfOf" not in referral["requester"]
    assert [resolve(bundle, r)["resourceType"] for r in referral["recipient"]] == ["HealthcareService"] * 2
    encounter = only(bundle, "Encounter")
    assert "serviceProvider" not in encounter
    assert [e["status"] for e in encounter["location"]] == ["active"]
    kinds = [p["type"][0].get("text") or p["type"][0]["coding"][0]["code"] for p in encounter["participant"]]
    assert kinds == ["PPRF", "Informant", "ATND"]  # no CALLBCK participant any more
    assert "organization" not in only(bundle, "Consent")
    assert resources(bundle, "Organization")  # the GP and role organisations remain
    assert all(o.get("active") is not True for o in resources(bundle, "Organization"))  # no custodian org


def test_no_encounter_effective_time_high_value() -> None:
    root = load()
    find(cd(root), "hl7:componentOf/hl7:encompassingEncounter/hl7:effectiveTime/hl7:high").attrib.pop("value")
    bundle = converted(root)
    assert only(bundle, "Encounter")["period"] == {"start": "2017-01-01T19:45:00+00:00"}
    assert only(bundle, "Consent")["period"] == {"start": "2017-01-01T19:45:00+00:00"}


def test_no_structured_body() -> None:
    root = load()
    document = cd(root)
    body = find(document, "hl7:component")
    for child in list(body):
        body.remove(child)
    body.append(hl7("<nonXMLBody><text mediaType='text/plain'>Narrative only</text></nonXMLBody>"))
    bundle = converted(root)
    for absent in ("CarePlan", "Observation", "QuestionnaireResponse", "Questionnaire", "Appointment"):
        assert resources(bundle, absent) == [], absent
    assert [s["title"] for s in only(bundle, "Composition")["section"]] == ["ReferralRequest"]
    assert "appointment" not in only(bundle, "Encounter")


# -- organisations: partOf chains and guardians ----------------------------------------------------------------

WHOLE_ORGANIZATION = (
    "<asOrganizationPartOf><effectiveTime><low value='20200101'/></effectiveTime>"
    "<wholeOrganization><id root='2.16.840.1.113883.2.1.3.2.4.19.1' extension='{code}'/><name>{name}</name>"
    "{inner}</wholeOrganization></asOrganizationPartOf>"
)


def _part_of(code: str, name: str, inner: str = "") -> str:
    return WHOLE_ORGANIZATION.format(code=code, name=name, inner=inner)


def _chain(bundle: Json, organization: Json) -> Iterator[Json]:
    while "partOf" in organization:
        organization = resolve(bundle, organization["partOf"])
        yield organization


def test_part_of_chains_and_guardians() -> None:
    root = load()
    document = cd(root)
    provider = find(document, "hl7:recordTarget/hl7:patientRole/hl7:providerOrganization")
    provider.append(hl7(_part_of("PCN1", "Synthetic Primary Care Network", _part_of("ICB1", "Synthetic ICB"))))
    represented = find(document, "hl7:author/hl7:assignedAuthor/hl7:representedOrganization")
    represented.append(hl7(_part_of("TRUST1", "Synthetic Trust")))
    patient = find(document, "hl7:recordTarget/hl7:patientRole/hl7:patient")
    patient.append(
        hl7(
            "<guardian><addr use='H'><streetAddressLine>1 Test Street</streetAddressLine>"
            "<postalCode>LS1 1AA</postalCode></addr>"
            "<guardianPerson><name><given>Gina</given><family>Guardian</family></name></guardianPerson>"
            "<guardianOrganization><id root='2.16.840.1.113883.2.1.3.2.4.19.1' extension='LA1'/>"
            "<name>Synthetic Local Authority</name>" + _part_of("GOV1", "Synthetic Council") + "</guardianOrganization>"
            "</guardian>"
        )
    )
    bundle = converted(root)
    names = {o.get("name"): o for o in resources(bundle, "Organization")}

    # The Encounter location's managing organisation and the GP practice each carry the whole chain.
    encounter = only(bundle, "Encounter")
    location = resolve(bundle, encounter["location"][0]["location"])
    managing = resolve(bundle, location["managingOrganization"])
    gp = resolve(bundle, only(bundle, "Patient")["generalPractitioner"][0])
    assert managing is not gp
    for organization in (managing, gp):
        assert [o["name"] for o in _chain(bundle, organization)] == ["Synthetic Primary Care Network", "Synthetic ICB"]
    assert encounter["location"][0]["period"] == {"start": "2020-01-01"}

    # The PractitionerRole's organisation and the guardian's organisation too.
    role = resources(bundle, "PractitionerRole")[0]
    assert [o["name"] for o in _chain(bundle, resolve(bundle, role["organization"]))] == ["Synthetic Trust"]
    (contact,) = only(bundle, "Patient")["contact"]
    assert contact["name"] == {"use": "official", "family": "Guardian", "given": ["Gina"]}
    assert contact["address"] == {"use": "home", "line": ["1 Test Street"], "postalCode": "LS1 1AA"}
    guardian_organization = resolve(bundle, contact["organization"])
    assert guardian_organization["identifier"] == [{"value": "LA1"}]
    assert [o["name"] for o in _chain(bundle, guardian_organization)] == ["Synthetic Council"]
    assert {"Synthetic Council", "Synthetic Trust", "Synthetic ICB"} <= set(names)

    # Every Organization with a partOf is directly followed by its chain (section 1).
    entries = [e["resource"] for e in bundle["entry"]]
    for index, resource in enumerate(entries):
        if resource["resourceType"] == "Organization" and "partOf" in resource:
            chain = list(_chain(bundle, resource))
            assert entries[index + 1 : index + 1 + len(chain)] == chain
    # ... and every Organization is a List member.
    members = [resolve(bundle, e["item"]) for e in only(bundle, "List")["entry"]]
    assert all(o in members for o in resources(bundle, "Organization"))


# -- other participants and patient details --------------------------------------------------------------------


def test_informant_professional_data_enterer_and_patient_details() -> None:
    root = load()
    document = cd(root)
    informant = find(document, "hl7:informant")
    informant.addnext(
        hl7(
            "<informant typeCode='INF'><assignedEntity><name>ignored</name>"
            "<telecom value='tel:01130000001' use='WP'/>"
            "<assignedPerson><name><given>Ian</given><family>Informant</family></name></assignedPerson>"
            "</assignedEntity></informant>"
        )
    )
    find(document, "hl7:custodian").addprevious(
        hl7(
            "<dataEnterer><time value='201701011950+00'/><assignedEntity>"
            "<assignedPerson><name>Data Clerk</name></assignedPerson></assignedEntity></dataEnterer>"
        )
    )
    patient = find(document, "hl7:recordTarget/hl7:patientRole/hl7:patient")
    patient.append(hl7("<maritalStatusCode code='m' codeSystem='2.16.840.1.113883.2.1.3.2.4.16.23'/>"))
    ethnic_code = "code='A' codeSystem='2.16.840.1.113883.2.1.3.2.4.16.6' displayName='British'"
    patient.append(hl7(f"<ethnicGroupCode {ethnic_code}/>"))
    patient.append(hl7("<birthplace><place><name>Leeds</name></place></birthplace>"))
    find(document, "hl7:recordTarget/hl7:patientRole/hl7:telecom").set("use", "H EC")
    bundle = converted(root)

    encounter = only(bundle, "Encounter")
    described = [(p["type"][0].get("text"), resolve(bundle, p["individual"])) for p in encounter["participant"]]
    texts = [text for text, _ in described]
    assert texts == ["CALLBCK", None, "INF", "Informant", "ENT", None]  # (a) (b) (c) (d) (e) (f)
    assert described[2][1]["resourceType"] == "Practitioner"
    assert described[2][1]["name"] == [{"use": "official", "family": "Informant", "given": ["Ian"]}]
    assert described[4][1]["name"] == [{"text": "Data Clerk"}]
    assert encounter["participant"][4]["period"] == {"start": "2017-01-01T19:50:00+00:00"}

    person = only(bundle, "Patient")
    assert person["maritalStatus"] == {
        "coding": [{"system": "http://hl7.org/fhir/v3/MaritalStatus", "code": "M", "display": "Married"}]
    }
    assert [e["url"].rsplit("/", 1)[-1] for e in person["extension"]] == [
        "Extension-CareConnect-EthnicCategory-1",
        "birthPlace",
    ]
    assert person["extension"][1]["valueAddress"] == {"text": "Leeds"}
    emergency = resources(bundle, "RelatedPerson")[-1]
    assert emergency["relationship"]["coding"][0]["code"] == "C"
    assert emergency["telecom"] == [{"system": "phone", "value": "tel:01634775667", "use": "home"}]
    assert types(bundle)[-3:] == ["RelatedPerson", "Device", "List"]


def test_repeat_caller_maps_only_the_newest_document() -> None:
    root = load("repeat-caller")
    documents = list(root.iter(f"{{{HL7}}}ClinicalDocument"))
    assert len(documents) == 6
    for document in documents:
        for id_ in document.iter(f"{{{HL7}}}id"):
            if id_.get("root") in NHS_NUMBER_ROOTS:
                id_.set("extension", "9990000011")
    find(documents[1], "hl7:effectiveTime").set("value", "20300101000000+00")  # now the newest
    bundle = converted(root)
    assert bundle["entry"][0]["resource"]["timestamp"] == "2030-01-01T00:00:00.000+00:00"
    set_id = find(documents[1], "hl7:setId").get("root")
    assert only(bundle, "Consent")["identifier"]["value"] == set_id
