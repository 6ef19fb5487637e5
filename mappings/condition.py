"""The Condition the referral is about (mapping.md section 3.12).

Its code is the SNOMED clinical discriminator; categories and date come from the top-level encounter entries,
language from the nested sections and evidence from the Pathways QuestionnaireResponses.
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Json

_DISCRIMINATOR_VALUE = hl7.xpath("hl7:observation/hl7:value[1]")
_TEXT = hl7.xpath("hl7:text")
#: ``@value`` of the encounter's own effectiveTime (an interval without ``@value`` does not count).
_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime[normalize-space(@value)]")
_LANGUAGE_CODES = hl7.xpath("hl7:languageCode[@code]")


def _code(ctx: MappingContext) -> Json | None:
    """The last ClinicalDiscriminator value coded in SNOMED (values in other systems, e.g. ``Dx011``, are
    skipped).

    The system stays the raw SNOMED OID (mapping.md 4.9, 6.11).
    """
    entries = hl7.template_entries(ctx.document, "COCD_TP146092GB01#ClinicalDiscriminator")
    values = [hl7.one(_DISCRIMINATOR_VALUE, entry) for entry in entries]
    snomed = [value for value in values if value is not None and value.get("codeSystem") == hl7.SNOMED_OID]
    return {"coding": [hl7.coding(snomed[-1])]} if snomed else None


def _asserted_date(ctx: MappingContext) -> str | None:
    """effectiveTime of the last top-level encounter entry having one (the appointment reference included)."""
    times = [time for encounter in hl7.TOP_ENCOUNTERS(ctx.document) for time in _EFFECTIVE_TIME(encounter)]
    return hl7.datetime_of(times[-1]) if times else None


def _language(ctx: MappingContext) -> str | None:
    """``@code`` of the last ``hl7:languageCode`` (with a code) of the nested sections."""
    codes = [code for section in hl7.NESTED_SECTIONS(ctx.document) for code in _LANGUAGE_CODES(section)]
    return codes[-1].get("code") if codes else None


def map_condition(
    ctx: MappingContext, subject: Json | None, encounter: Json, questionnaire_responses: list[Json]
) -> Json:
    """The Condition; ``evidence`` points at each QuestionnaireResponse in order."""
    categories = [
        {"text": hl7.all_text(text)}
        for encounter_entry in hl7.TOP_ENCOUNTERS(ctx.document)
        if (text := hl7.one(_TEXT, encounter_entry)) is not None
    ]
    return hl7.compact(
        {
            **ctx.new_resource("Condition"),
            "clinicalStatus": "active",
            "verificationStatus": "unknown",
            "category": categories,
            "code": _code(ctx),
            "subject": hl7.ref(subject) if subject else None,
            "context": hl7.ref(encounter),
            "assertedDate": _asserted_date(ctx),
            "language": _language(ctx),
            "evidence": [{"detail": [hl7.ref(response)]} for response in questionnaire_responses],
        }
    )
