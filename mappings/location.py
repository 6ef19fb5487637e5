"""Location resources (mapping.md section 3.5). Status, mode, type, position and identifier are never set."""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

# -- (b) incident location: EE/hl7:location/hl7:healthCareFacility/hl7:location ------------------------------
_PLACE_NAME = hl7.xpath("hl7:name[1]")
_PLACE_ADDRESS = hl7.xpath("hl7:addr[1]")

# -- (c) recipient location: hl7:intendedRecipient -----------------------------------------------------------
_RECIPIENT_ADDRESS = hl7.xpath("hl7:addr[1]")
_RECIPIENT_TELECOMS = hl7.xpath("hl7:telecom")


def _location(ctx: MappingContext, content: Json) -> Json:
    return {**ctx.new_resource("Location"), **(hl7.compact(content) or {})}


def provider_location(ctx: MappingContext, managing_organization: Json) -> Json:
    """(a) The patient's provider organisation as an Encounter location: only ``managingOrganization``."""
    return _location(ctx, {"managingOrganization": hl7.ref(managing_organization)})


def incident_location(ctx: MappingContext, place: Element) -> Json:
    """(b) Where the encounter happened. A ``nullFlavor`` name has no text, so it is omitted."""
    name = hl7.one(_PLACE_NAME, place)
    return _location(
        ctx,
        {
            "name": hl7.all_text(name) if name is not None else None,
            "address": hl7.address(hl7.one(_PLACE_ADDRESS, place)),
        },
    )


def recipient_location(ctx: MappingContext, recipient: Element, organization: Json | None) -> Json | None:
    """(c) A HealthcareService's location from ``hl7:intendedRecipient``.

    ``None`` unless the recipient has an address, a telecom or a received organisation (``organization``).
    """
    address = hl7.one(_RECIPIENT_ADDRESS, recipient)
    telecoms = _RECIPIENT_TELECOMS(recipient)
    if address is None and not telecoms and organization is None:
        return None
    return _location(
        ctx,
        {
            "telecom": [hl7.telecom(tel) for tel in telecoms],
            "address": hl7.address(address),
            "managingOrganization": hl7.ref(organization) if organization is not None else None,
        },
    )
