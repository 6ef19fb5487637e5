"""The Composition: the report's table of contents (mapping.md sections 3.15, 4.8 and 6.9).

Its first sections mirror the CDA section tree, each with its own title and escaped narrative; then one
section per CarePlan, the ReferralRequest and one per QuestionnaireResponse.
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

REPORT_OF_CLINICAL_ENCOUNTER = {
    "system": "http://snomed.info/sct",
    "code": "371531000",
    "display": "Report of clinical encounter (record artifact)",
}
#: Confidentiality codes FHIR accepts; any other code is left out (the reference fails on it).
CONFIDENTIALITY_CODES = frozenset({"U", "L", "M", "N", "R", "V"})

_SET_ID = hl7.xpath("hl7:setId")
_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime")
_CONFIDENTIALITY = hl7.xpath("hl7:confidentialityCode")
_PARENT_DOCUMENT_ID = hl7.xpath("hl7:relatedDocument[1]/hl7:parentDocument/hl7:id[1]")
_BODY_COMPONENTS = hl7.xpath("hl7:component/hl7:structuredBody/hl7:component")
_COMPONENT_SECTION = hl7.xpath("hl7:section")
_TITLE = hl7.xpath("hl7:title")
_TEXT = hl7.xpath("hl7:text")


def document_identifier(document: Element) -> Json | None:
    """``{use: usual, value: setId/@root}``: the document set, shared by every version of the report."""
    set_id = hl7.one(_SET_ID, document)
    root = set_id.get("root") if set_id is not None else None
    return {"use": "usual", "value": root} if root and root.strip() else None


def section_text(section: Element) -> Json | None:
    """``{status: generated, div}`` from the section's **own** ``hl7:text`` (never a descendant's); ``None``
    when its markup is empty. Consent.text uses the same narrative (mapping.md 6.8)."""
    div = hl7.narrative_div(hl7.markup(hl7.one(_TEXT, section)))
    return {"status": "generated", "div": div} if div else None


def _mirror(section: Element) -> Json:
    """A CDA section as a Composition section: own title and text, then its child sections, recursively."""
    title = hl7.one(_TITLE, section)
    return {
        "title": hl7.all_text(title) if title is not None else None,
        "text": section_text(section),
        "section": [_mirror(child) for child in hl7.CHILD_SECTIONS(section)],
    }


def _mirrored_sections(document: Element) -> list[Json]:
    """One section per structured-body component (a top-level section's own title/text included, 6.9)."""
    sections = []
    for component in _BODY_COMPONENTS(document):
        top = hl7.one(_COMPONENT_SECTION, component)
        if top is not None:
            sections.append(_mirror(top))
    return sections


def _entry_section(title: str, resource: Json) -> Json:
    return {"title": title, "entry": [hl7.ref(resource)]}


def map_composition(
    ctx: MappingContext,
    subject: Json | None,
    encounter: Json,
    authors: list[Json],
    care_plans: list[Json],
    referral_request: Json,
    questionnaire_responses: list[Json],
) -> Json:
    """The Composition. ``authors`` are the Practitioners of the author PractitionerRoles, in author order."""
    document = ctx.document
    confidentiality = hl7.one(_CONFIDENTIALITY, document)
    confidentiality_code = confidentiality.get("code") if confidentiality is not None else None
    if confidentiality_code not in CONFIDENTIALITY_CODES:
        confidentiality_code = None
    parent_id = hl7.one(_PARENT_DOCUMENT_ID, document)
    parent_root = parent_id.get("root") if parent_id is not None else None
    return hl7.compact(
        {
            **ctx.new_resource("Composition"),
            "identifier": document_identifier(document),
            "status": "final",
            "type": {"coding": [dict(REPORT_OF_CLINICAL_ENCOUNTER)]},
            "subject": hl7.ref(subject) if subject else None,
            "encounter": hl7.ref(encounter),
            "date": hl7.datetime_of(hl7.one(_EFFECTIVE_TIME, document)),
            "author": [hl7.ref(author) for author in authors],
            "title": "111 Report",
            "confidentiality": confidentiality_code,
            "relatesTo": [{"code": "replaces", "targetIdentifier": {"use": "usual", "value": parent_root}}]
            if parent_root and parent_root.strip()
            else None,
            "section": [
                *_mirrored_sections(document),
                *(_entry_section("CarePlan", plan) for plan in care_plans),
                _entry_section("ReferralRequest", referral_request),
                *(_entry_section("QuestionnaireResponse", response) for response in questionnaire_responses),
            ],
        }
    )
