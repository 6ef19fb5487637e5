"""The Appointment booked by 111 at the receiving service, and its Locations (mapping.md sections 3.17, 6.1).

The reference recognises the appointment but never emits it, leaving ``Encounter.appointment`` dangling; this
project emits the resource it meant.
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

#: SNOMED "Appointment" section code.
APPOINTMENT_SECTION_CODE = "749001000000101"

_TITLE = hl7.xpath("hl7:title")
_FIRST_CONTENT = hl7.xpath("hl7:text/hl7:content[1]")
_ENCOUNTER = hl7.xpath("hl7:encounter")
_ENCOUNTER_CODE = hl7.xpath("hl7:code")
_PARTICIPANT_ROLES = hl7.xpath("hl7:participant/hl7:participantRole")
_ADDRESS = hl7.xpath("hl7:addr[1]")
_PLAYING_ENTITY_NAME = hl7.xpath("hl7:playingEntity/hl7:name[1]")
_PLAYING_ENTITY_DESC = hl7.xpath("hl7:playingEntity/hl7:desc")


def appointment_reference(document: Element) -> tuple[Element, Element] | None:
    """``(entry, section)``: the first AppointmentReference entry and the first nested Appointment section, or
    ``None`` unless the document has both."""
    entries = hl7.template_entries(document, "COCD_TP146093GB01#AppointmentReference")
    sections = [
        section
        for section in hl7.NESTED_SECTIONS(document)
        if hl7.has_snomed_code(section, APPOINTMENT_SECTION_CODE)
    ]
    return (entries[0], sections[0]) if entries and sections else None


def _location(ctx: MappingContext, role: Element) -> Json:
    """Where the appointment takes place: the participant role's address and playing entity."""
    name = hl7.one(_PLAYING_ENTITY_NAME, role)
    return hl7.compact(
        {
            **ctx.new_resource("Location"),
            "name": hl7.all_text(name) if name is not None else None,
            "description": hl7.first_text(hl7.one(_PLAYING_ENTITY_DESC, role)),
            "address": hl7.address(hl7.one(_ADDRESS, role)),
        }
    )


def _participant(actor: Json) -> Json:
    return {"actor": hl7.ref(actor), "required": "required", "status": "accepted"}


def map_appointment(ctx: MappingContext, patient: Json | None) -> tuple[Json, list[Json]] | None:
    """The booked Appointment and its Locations (participant order); ``None`` without an appointment
    reference. ``patient`` is the Patient (the first member when the subject is a Group)."""
    found = appointment_reference(ctx.document)
    if found is None:
        return None
    entry, section = found
    encounter = hl7.one(_ENCOUNTER, entry)
    code = hl7.one(_ENCOUNTER_CODE, encounter)
    roles = _PARTICIPANT_ROLES(encounter) if encounter is not None else []
    locations = [_location(ctx, role) for role in roles]
    appointment = hl7.compact(
        {
            **ctx.new_resource("Appointment"),
            "status": "booked",
            "reason": [{"text": code.get("displayName") if code is not None else None}],
            "description": hl7.first_text(hl7.one(_TITLE, section)),
            "comment": hl7.first_text(hl7.one(_FIRST_CONTENT, section)),
            "participant": [_participant(actor) for actor in ([patient] if patient else []) + locations],
        }
    )
    return appointment, locations
