"""The mapping.md section 6 fixes that change corpus facts, each asserted explicitly.

Parity excuses these facts (``known-differences.json``), so parity alone would not notice if a fix regressed
to the reference's defect: 6.1 (the Appointment the reference references but never emits), 6.7 (the NHS-number
verification coding system and display) and 6.8 (escaped markup instead of raw CDA in ``Consent.text.div``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import require_shared

from adaptor.delivery.conversion import convert

XHTML_DIV = '<div xmlns="http://www.w3.org/1999/xhtml">'
VERIFICATION_EXTENSION = (
    "https://fhir.hl7.org.uk/STU3/StructureDefinition/Extension-CareConnect-NHSNumberVerificationStatus-1"
)
VERIFICATION_SYSTEM = "https://fhir.hl7.org.uk/STU3/CodeSystem/CareConnect-NHSNumberVerificationStatus-1"

Json = dict[str, Any]


@functools.cache
def _bundle(pair: str) -> Json:
    request = require_shared("corpus", "reference") / f"{pair}-itk-request.xml"
    assert request.exists(), f"corpus request {request} is missing"
    return convert(request.read_bytes())


def _resources(bundle: Json, resource_type: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _resolve(bundle: Json, reference: Json) -> Json:
    matches = [e["resource"] for e in bundle["entry"] if e["fullUrl"] == reference["reference"]]
    assert len(matches) == 1, f"{reference['reference']} resolves to {len(matches)} entries"
    return matches[0]


# -- 6.1 the Appointment is emitted and Encounter.appointment resolves ---------------------------------------


def test_6_1_encounter_appointment_resolves_to_the_booked_appointment() -> None:
    bundle = _bundle("primary-emergency")
    (encounter,) = _resources(bundle, "Encounter")
    (appointment,) = _resources(bundle, "Appointment")
    assert _resolve(bundle, encounter["appointment"]) is appointment
    assert appointment["status"] == "booked"
    assert appointment["description"] == "Appointment Reference"
    assert appointment["reason"] == [{"text": "Patient convenience appointment"}]
    assert "CENTRAL LONDON COMMUNITY HEALTHCARE NHS TRUST" in appointment["comment"]


def test_6_1_appointment_participants_are_the_patient_and_its_location() -> None:
    bundle = _bundle("primary-emergency")
    (appointment,) = _resources(bundle, "Appointment")
    (patient,) = _resources(bundle, "Patient")
    actors = [_resolve(bundle, participant["actor"]) for participant in appointment["participant"]]
    assert actors[0] is patient
    assert [actor["resourceType"] for actor in actors[1:]] == ["Location"]
    assert actors[1] == {
        "resourceType": "Location",
        "id": actors[1]["id"],
        "name": "CENTRAL LONDON COMMUNITY HEALTHCARE NHS TRUST",
        "description": "Psychiatric Community Care Services",
        "address": {"use": "work", "line": ["Great George Street"], "city": "Leeds", "postalCode": "LE13EX"},
    }
    for participant in appointment["participant"]:
        assert participant["required"] == "required"
        assert participant["status"] == "accepted"


def test_6_1_appointment_and_its_location_follow_the_referral_entries() -> None:
    types = [e["resource"]["resourceType"] for e in _bundle("primary-emergency")["entry"]]
    at = types.index("Appointment")
    assert types[at - 3 : at + 3] == [
        "ReferralRequest",
        "ProcedureRequest",
        "Practitioner",
        "Appointment",
        "Location",
        "Composition",
    ]


def test_6_1_no_appointment_without_an_appointment_reference() -> None:
    bundle = _bundle("tpp-ooh-T6-skillset")
    assert _resources(bundle, "Appointment") == []
    assert "appointment" not in _resources(bundle, "Encounter")[0]


# -- 6.7 the NHS-number verification coding ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pair", "number", "code", "display"),
    [
        ("primary-emergency", "993254128", "02", "Number present but not traced"),
        ("adastra-itk-ooh-referral-dx06", None, "01", "Number present and verified"),
        ("repeat-caller", None, "01", "Number present and verified"),
        ("tpp-ooh-T6-skillset", "9990556512", "01", "Number present and verified"),
    ],
)
def test_6_7_nhs_number_verification_uses_the_careconnect_code_system(
    pair: str, number: str | None, code: str, display: str
) -> None:
    (patient,) = _resources(_bundle(pair), "Patient")
    (identifier,) = patient["identifier"]
    assert identifier["system"] == "https://fhir.nhs.uk/Id/nhs-number"
    if number is not None:
        assert identifier["value"] == number
    assert identifier["extension"] == [
        {
            "url": VERIFICATION_EXTENSION,
            "valueCodeableConcept": {
                "coding": [{"system": VERIFICATION_SYSTEM, "code": code, "display": display}]
            },
        }
    ]


# -- 6.8 Consent.text.div is escaped markup, as in the Composition -------------------------------------------


def _sections(sections: list[Json]) -> Iterator[Json]:
    for section in sections:
        yield section
        yield from _sections(section.get("section", []))


def test_6_8_consent_div_is_escaped_markup_not_raw_cda() -> None:
    bundle = _bundle("primary-emergency")
    (consent,) = _resources(bundle, "Consent")
    div = consent["text"]["div"]
    assert consent["text"]["status"] == "generated"
    assert div.startswith(XHTML_DIV + "&lt;table&gt;")
    assert div.endswith("&lt;/table&gt;</div>")
    assert "urn:hl7-org:v3" not in div  # the reference wraps the CDA element, namespace and all
    assert "<table" not in div and "<th>" not in div
    assert "&lt;th&gt;Permission to view outcome&lt;/th&gt;" in div


def test_6_8_consent_div_is_the_composition_permission_to_view_section_div() -> None:
    bundle = _bundle("primary-emergency")
    (consent,) = _resources(bundle, "Consent")
    (composition,) = _resources(bundle, "Composition")
    permission = [s for s in _sections(composition["section"]) if s.get("title") == "Permission to View"]
    assert len(permission) == 1
    assert consent["text"]["div"] == permission[0]["text"]["div"]
