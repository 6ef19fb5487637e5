"""CarePlans from the "Information and advice given" sections (mapping.md section 3.13)."""

from __future__ import annotations

import copy

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

#: SNOMED "Information and advice given" section code.
ADVICE_SECTION_CODE = "1052951000000105"

_TITLE = hl7.xpath("hl7:title")
_FIRST_CONTENT = hl7.xpath("hl7:text/hl7:content[1]")


def advice_sections(document: Element) -> list[Element]:
    """The advice sections at any depth below the top-level sections, in the reference's order: for each
    section, its matching direct children first, then the same walk inside each child in turn."""

    def collect(section: Element) -> list[Element]:
        children = hl7.CHILD_SECTIONS(section)
        matching = [child for child in children if hl7.has_snomed_code(child, ADVICE_SECTION_CODE)]
        return matching + [found for child in children for found in collect(child)]

    return [found for top in hl7.TOP_SECTIONS(document) for found in collect(top)]


def map_care_plans(
    ctx: MappingContext, subject: Json | None, encounter: Json, condition: Json, authors: list[Json]
) -> list[Json]:
    """A CarePlan per advice section; ``authors`` are the Organizations managing the Encounter's locations."""
    return [
        hl7.compact(
            {
                **ctx.new_resource("CarePlan"),
                "status": "completed",
                "intent": "plan",
                "title": hl7.first_text(hl7.one(_TITLE, section)),
                "description": hl7.first_text(hl7.one(_FIRST_CONTENT, section)),
                "subject": hl7.ref(subject) if subject else None,
                "context": hl7.ref(encounter),
                "period": copy.deepcopy(encounter.get("period")),
                "author": [hl7.ref(author) for author in authors],
                "addresses": [hl7.ref(condition)],
            }
        )
        for section in advice_sections(ctx.document)
    ]
