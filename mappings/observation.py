"""Observations of the patient's reported condition (mapping.md section 3.16)."""

from __future__ import annotations

import re

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

#: Matched against the whole title, case-sensitively; ``.`` stands for the apostrophe (any one character).
REPORTED_CONDITION_TITLE = re.compile(r"Patient.s Reported Condition")

PRESENTING_COMPLAINT = {
    "system": "http://snomed.info/sct",
    "code": "33962009",
    "display": "Presenting complaint",
}

_TITLE = hl7.xpath("hl7:title")
_CONTENTS = hl7.xpath("hl7:text[1]/hl7:content")


def is_reported_condition(section: Element) -> bool:
    """True when the section's title text is exactly "Patient's Reported Condition" (any apostrophe).

    A section without a title, or whose title starts with markup, does not match (the reference fails there).
    """
    title = hl7.first_text(hl7.one(_TITLE, section))
    return title is not None and REPORTED_CONDITION_TITLE.fullmatch(title) is not None


def map_observations(ctx: MappingContext, subject: Json | None, encounter: Json) -> list[Json]:
    """One Observation per nested reported-condition section; its value is the first text of each direct
    ``hl7:content`` of the section text, joined with line breaks (kept untrimmed)."""
    return [
        hl7.compact(
            {
                **ctx.new_resource("Observation"),
                "status": "final",
                "code": {"coding": [dict(PRESENTING_COMPLAINT)]},
                "subject": hl7.ref(subject) if subject else None,
                "context": hl7.ref(encounter),
                "valueString": "\n".join(hl7.first_text(content) or "" for content in _CONTENTS(section)),
            }
        )
        for section in hl7.NESTED_SECTIONS(ctx.document)
        if is_reported_condition(section)
    ]
