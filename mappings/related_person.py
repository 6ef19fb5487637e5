"""RelatedPerson resources (mapping.md section 3.8): an informant with ``hl7:relatedEntity``, and the
patient's emergency contact.

``patient`` only accepts a Patient, so with a Group it is the first member (section 3.4).
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

EMERGENCY_CONTACT = {"system": "http://hl7.org/fhir/v2/0131", "code": "C", "display": "Emergency Contact"}

# -- (a) informant: hl7:informant/hl7:relatedEntity ----------------------------------------------------------
_RELATIONSHIP_CODE = hl7.xpath("hl7:code[1]")
_NAMES = hl7.xpath("hl7:relatedPerson/hl7:name")
_TELECOMS = hl7.xpath("hl7:telecom")
_ADDRESSES = hl7.xpath("hl7:addr")
_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime[1]")

# -- (b) emergency contact: PR/hl7:telecom -------------------------------------------------------------------
_PATIENT_TELECOMS = hl7.xpath("hl7:recordTarget[1]/hl7:patientRole[1]/hl7:telecom")


def _patient_ref(patient: Json | None) -> Json | None:
    return hl7.ref(patient) if patient is not None else None


def informant(ctx: MappingContext, related_entity: Element, patient: Json | None) -> Json:
    """(a) The RelatedPerson for an informant's ``hl7:relatedEntity``."""
    telecoms = _TELECOMS(related_entity)
    relationship = [hl7.coding(hl7.one(_RELATIONSHIP_CODE, related_entity))]
    if any(hl7.is_emergency_contact(tel) for tel in telecoms):
        relationship.append(dict(EMERGENCY_CONTACT))
    content = hl7.compact(
        {
            "active": True,
            "patient": _patient_ref(patient),
            "relationship": {"coding": relationship},
            "name": hl7.each(_NAMES, related_entity, hl7.human_name),
            "telecom": [hl7.telecom(tel) for tel in telecoms],
            "gender": "unknown",
            "address": hl7.each(_ADDRESSES, related_entity, hl7.address),
            "period": hl7.period(hl7.one(_EFFECTIVE_TIME, related_entity)),
        }
    )
    return {**ctx.new_resource("RelatedPerson"), **(content or {})}


def map_emergency_contact(ctx: MappingContext, patient: Json | None) -> Json | None:
    """(b) The patient's emergency contact: the first ``PR/hl7:telecom`` whose ``@use`` includes ``EC``.

    ``None`` without such a telecom. No active, gender or name: the CDA only gives a number.
    """
    tel = next((tel for tel in _PATIENT_TELECOMS(ctx.document) if hl7.is_emergency_contact(tel)), None)
    if tel is None:
        return None
    content = hl7.compact(
        {
            "patient": _patient_ref(patient),
            "relationship": {"coding": [dict(EMERGENCY_CONTACT)]},
            "telecom": [hl7.telecom(tel)],
        }
    )
    return {**ctx.new_resource("RelatedPerson"), **(content or {})}
