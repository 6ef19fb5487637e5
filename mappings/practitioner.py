"""Practitioner resources (mapping.md section 3.6).

One builder serves every CDA role that names a person: ``hl7:associatedEntity`` (participants, REFT
recipients), ``hl7:assignedEntity`` (informants, data enterer, responsible party) and ``hl7:assignedAuthor``
(authors). No identifier and no qualification are mapped.
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

#: The person's names, whichever of the two person elements the role uses.
_PERSON_NAMES = hl7.xpath("hl7:associatedPerson/hl7:name | hl7:assignedPerson/hl7:name")
_TELECOMS = hl7.xpath("hl7:telecom")
_ADDRESSES = hl7.xpath("hl7:addr")


def practitioner(ctx: MappingContext, entity: Element) -> Json:
    """The Practitioner for a role element (associatedEntity, assignedEntity or assignedAuthor)."""
    content = hl7.compact(
        {
            "active": True,
            "name": hl7.each(_PERSON_NAMES, entity, hl7.human_name),
            "telecom": hl7.each(_TELECOMS, entity, hl7.telecom),
            "address": hl7.each(_ADDRESSES, entity, hl7.address),
        }
    )
    return {**ctx.new_resource("Practitioner"), **(content or {})}
