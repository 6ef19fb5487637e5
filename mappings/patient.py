"""The Encounter subject: a Patient per ``hl7:recordTarget``, and a Group when there are several
(mapping.md sections 3.3, 3.4, 6.3, 6.5).

Each Patient brings its GP practice Organization (``generalPractitioner``, a resource of its own even though
the Encounter location's managing organisation has identical content: section 6.2) and its guardian
Organizations.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json
from .organization import organization

NHS_NUMBER_SYSTEM = "https://fhir.nhs.uk/Id/nhs-number"
VERIFICATION_EXTENSION = (
    "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-NHSNumberVerificationStatus-1"
)
VERIFICATION_SYSTEM = "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1"
#: NHS number id roots and their verification status coding (section 6.7).
NHS_NUMBER_ROOTS = {
    "2.16.840.1.113883.2.1.4.1": ("01", "Number present and verified"),
    "2.16.840.1.113883.2.1.3.2.4.18.23": ("02", "Number present but not traced"),
}
ETHNIC_CATEGORY_EXTENSION = "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-EthnicCategory-1"
RELIGION_EXTENSION = "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-ReligiousAffiliation-1"
BIRTH_PLACE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/birthPlace"

GENDERS = {"1": "male", "2": "female", "9": "other"}
MARITAL_STATUS_SYSTEM = "http://hl7.org/fhir/v3/MaritalStatus"
MARITAL_STATUSES = {
    "A": "Annulled",
    "D": "Divorced",
    "I": "Interlocutory",
    "L": "Legally separated",
    "M": "Married",
    "P": "Polygamous",
    "S": "Never married",
    "T": "Domestic partner",
    "U": "Unmarried",
    "W": "Widowed",
}

_RECORD_TARGETS = hl7.xpath("hl7:recordTarget")
_PATIENT_ROLE = hl7.xpath("hl7:patientRole[1]")

# -- PR = hl7:patientRole ------------------------------------------------------------------------------------
_IDS = hl7.xpath("hl7:id")
_TELECOMS = hl7.xpath("hl7:telecom")
_ADDRESSES = hl7.xpath("hl7:addr")
_PATIENT = hl7.xpath("hl7:patient[1]")
_PROVIDER_ORGANIZATION = hl7.xpath("hl7:providerOrganization[1]")

# -- PR/hl7:patient ------------------------------------------------------------------------------------------
_NAMES = hl7.xpath("hl7:name")
_GENDER = hl7.xpath("hl7:administrativeGenderCode[1]")
_BIRTH_TIME = hl7.xpath("hl7:birthTime[1]")
_MARITAL_STATUS = hl7.xpath("hl7:maritalStatusCode[1]")
_LAST_LANGUAGE = hl7.xpath("(hl7:languageCommunication/hl7:languageCode)[last()]")
_ETHNIC_GROUP = hl7.xpath("hl7:ethnicGroupCode[1]")
_RELIGION = hl7.xpath("hl7:religiousAffiliationCode[1]")
_BIRTH_PLACE_NAME = hl7.xpath("hl7:birthplace/hl7:place/hl7:name[1]")
_GUARDIANS = hl7.xpath("hl7:guardian")

# -- hl7:guardian --------------------------------------------------------------------------------------------
_GUARDIAN_NAME = hl7.xpath("hl7:guardianPerson/hl7:name[1]")
_GUARDIAN_ADDRESS = hl7.xpath("hl7:addr[1]")
_GUARDIAN_ORGANIZATION = hl7.xpath("hl7:guardianOrganization[1]")


@dataclass(frozen=True)
class Subject:
    """The Encounter subject and what comes with it.

    ``subject`` is the Patient or Group (``None`` without a recordTarget); ``patient`` is the Patient that
    Patient-only references use (the first member of a Group); ``resources`` are in Bundle order
    (mapping.md section 1 step 6).
    """

    subject: Json | None
    patient: Json | None
    resources: list[Json]


def _nhs_number(id_: Element) -> Json | None:
    status = NHS_NUMBER_ROOTS.get(id_.get("root") or "")
    number = id_.get("extension")
    if status is None or number is None or not number.strip():
        return None
    code, display = status
    verification = {"system": VERIFICATION_SYSTEM, "code": code, "display": display}
    return {
        "extension": [{"url": VERIFICATION_EXTENSION, "valueCodeableConcept": {"coding": [verification]}}],
        "system": NHS_NUMBER_SYSTEM,
        "value": number,
    }


def _gender(code: Element | None) -> str | None:
    if code is None:
        return None
    return GENDERS.get(code.get("code") or "", "unknown")


def _marital_status(code: Element | None) -> Json | None:
    value = ((code.get("code") if code is not None else None) or "").upper()
    display = MARITAL_STATUSES.get(value)
    if display is None:
        return None
    return {"coding": [{"system": MARITAL_STATUS_SYSTEM, "code": value, "display": display}]}


def _coded_extension(url: str, code: Element | None) -> Json | None:
    value = hl7.coding(code)
    return {"url": url, "valueCodeableConcept": {"coding": [value]}} if value else None


def _extensions(patient: Element) -> list[Json | None]:
    """Ethnic category, religious affiliation and birthplace, in that order (section 6.3)."""
    birth_place = hl7.first_text(hl7.one(_BIRTH_PLACE_NAME, patient))
    return [
        _coded_extension(ETHNIC_CATEGORY_EXTENSION, hl7.one(_ETHNIC_GROUP, patient)),
        _coded_extension(RELIGION_EXTENSION, hl7.one(_RELIGION, patient)),
        {"url": BIRTH_PLACE_EXTENSION, "valueAddress": {"text": birth_place}}
        if birth_place and birth_place.strip()
        else None,
    ]


def _birth_date(birth_time: Element | None) -> str | None:
    ts = hl7.ts_of(birth_time)
    return hl7.format_birth_date(ts) if ts is not None else None


def _guardian(ctx: MappingContext, guardian: Element) -> tuple[Json | None, list[Json]]:
    """A ``Patient.contact`` and the guardian Organization (plus its partOf chain) it references."""
    organization_element = hl7.one(_GUARDIAN_ORGANIZATION, guardian)
    organizations = organization(ctx, organization_element) if organization_element is not None else []
    contact = hl7.compact(
        {
            "name": hl7.human_name(hl7.one(_GUARDIAN_NAME, guardian)),
            "address": hl7.address(hl7.one(_GUARDIAN_ADDRESS, guardian)),
            "organization": hl7.ref(organizations[0]) if organizations else None,
        }
    )
    return contact, organizations


def _patient(ctx: MappingContext, role: Element | None) -> list[Json]:
    """The Patient for a ``hl7:patientRole``, followed by its GP and guardian Organizations (with chains)."""
    content: Json = {
        "identifier": [_nhs_number(id_) for id_ in _IDS(role)] if role is not None else None,
        "active": True,
    }
    organizations: list[Json] = []
    person = hl7.one(_PATIENT, role)
    if role is not None and person is not None:
        language = hl7.one(_LAST_LANGUAGE, person)
        content.update(
            {
                "language": language.get("code") if language is not None else None,
                "name": hl7.each(_NAMES, person, hl7.human_name),
                "telecom": hl7.each(_TELECOMS, role, hl7.telecom),
                "gender": _gender(hl7.one(_GENDER, person)),
                "birthDate": _birth_date(hl7.one(_BIRTH_TIME, person)),
                "address": hl7.each(_ADDRESSES, role, hl7.address),
                "maritalStatus": _marital_status(hl7.one(_MARITAL_STATUS, person)),
                "extension": _extensions(person),
            }
        )
        provider = hl7.one(_PROVIDER_ORGANIZATION, role)
        if provider is not None:
            organizations = organization(ctx, provider)
            content["generalPractitioner"] = [hl7.ref(organizations[0])]
        contacts = []
        for guardian in _GUARDIANS(person):
            contact, guardian_organizations = _guardian(ctx, guardian)
            contacts.append(contact)
            organizations.extend(guardian_organizations)
        content["contact"] = contacts
    return [{**ctx.new_resource("Patient"), **(hl7.compact(content) or {})}, *organizations]


def map_subject(ctx: MappingContext) -> Subject:
    """The Patient (one recordTarget) or the Group of Patients (several), with their Organizations."""
    record_targets = _RECORD_TARGETS(ctx.document)
    if not record_targets:
        return Subject(None, None, [])
    if len(record_targets) == 1:
        resources = _patient(ctx, hl7.one(_PATIENT_ROLE, record_targets[0]))
        return Subject(resources[0], resources[0], resources)
    members: list[Json] = []
    member_resources: list[Json] = []
    for record_target in record_targets:
        role = hl7.one(_PATIENT_ROLE, record_target)
        if role is None:
            continue
        resources = _patient(ctx, role)
        members.append(resources[0])
        member_resources.extend(resources)
    group_content = hl7.compact(
        {
            "active": True,
            "type": "person",
            # Not in mapping.md 3.4, but required by STU3 (Group.actual 1..1) and true: the members are the
            # document's actual patients, not a definition of a population.
            "actual": True,
            "member": [{"entity": hl7.ref(member)} for member in members],
        }
    )
    group = {**ctx.new_resource("Group"), **(group_content or {})}
    return Subject(group, members[0] if members else None, [group, *member_resources])
