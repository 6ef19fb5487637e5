"""The Consent: permission to view and share the record (mapping.md sections 3.14 and 6.8)."""

from __future__ import annotations

import copy

from . import hl7
from .composition import document_identifier, section_text
from .context import MappingContext
from .hl7 import Element, Json

#: SNOMED "Consent for information sharing" section code.
CONSENT_SECTION_CODE = "887031000000108"
OPT_OUT_POLICY = "http://hl7.org/fhir/ConsentPolicy/opt-out"
SNOMED_URL = "http://snomed.info/sct"

_CONSENT_CODES = hl7.xpath("hl7:authorization/hl7:consent/hl7:code[@code and @codeSystem and @displayName]")
_OBSERVATION_TIME = hl7.xpath("hl7:observation/hl7:effectiveTime[1]")
_ID = hl7.xpath("hl7:id[1]")
_TEXT = hl7.xpath("hl7:text")


def _action(code: Element) -> Json:
    """A consent code; the SNOMED OID (any case) becomes the SNOMED URL, other systems are kept as written."""
    system = code.get("codeSystem") or ""
    display = code.get("displayName")
    return {
        "coding": [
            {
                "system": SNOMED_URL if system.lower() == hl7.SNOMED_OID.lower() else system,
                "code": code.get("code"),
                "display": display,
            }
        ],
        "text": display,
    }


def _data_period(document: Element) -> Json | None:
    """low/high of the last PermissionToView entry whose observation has an effectiveTime."""
    entries = hl7.template_entries(document, "COCD_TP146050GB01#PermissionToView")
    times = [time for entry in entries if (time := hl7.one(_OBSERVATION_TIME, entry)) is not None]
    return hl7.period(times[-1]) if times else None


def map_consent(
    ctx: MappingContext, patient: Json | None, encounter: Json, service_provider: Json | None
) -> Json:
    """The Consent. ``patient`` is the Patient (the first member when the subject is a Group);
    ``service_provider`` the custodian Organization (``None`` when the document names none)."""
    document = ctx.document
    consent_sections = [
        section
        for section in hl7.NESTED_SECTIONS(document)
        if hl7.has_snomed_code(section, CONSENT_SECTION_CODE)
    ]
    section_ids = [found for section in consent_sections if (found := hl7.one(_ID, section)) is not None]
    with_text = [section for section in consent_sections if hl7.one(_TEXT, section) is not None]
    return hl7.compact(
        {
            **ctx.new_resource("Consent"),
            "text": section_text(with_text[-1]) if with_text else None,
            "identifier": document_identifier(document),
            "status": "active",
            "patient": hl7.ref(patient) if patient else None,
            "period": copy.deepcopy(encounter.get("period")),
            "consentingParty": [hl7.ref(patient)] if patient else None,
            "action": [_action(code) for code in _CONSENT_CODES(document)],
            "organization": [hl7.ref(service_provider)] if service_provider else None,
            "sourceIdentifier": {"value": section_ids[-1].get("root")} if section_ids else None,
            "policyRule": OPT_OUT_POLICY,
            "dataPeriod": _data_period(document),
            "data": [{"meaning": "related", "reference": hl7.ref(encounter)}],
        }
    )
