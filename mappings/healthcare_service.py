"""HealthcareService resources (mapping.md section 3.9): one per ``PRCP`` information recipient.

``TRC`` (copy) recipients are not services the patient is referred to, so they are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import hl7
from .context import MappingContext
from .hl7 import Json
from .location import recipient_location
from .organization import recipient_organization

_RECIPIENTS = hl7.xpath("hl7:informationRecipient")
_INTENDED_RECIPIENT = hl7.xpath("hl7:intendedRecipient[1]")
_RECEIVED_ORGANIZATION = hl7.xpath("hl7:receivedOrganization[1]")
_ORGANIZATION_NAME = hl7.xpath("hl7:name[1]")
_TELECOMS = hl7.xpath("hl7:telecom")

#: ``hl7:informationRecipient/@typeCode`` when the attribute is absent (the CDA default).
DEFAULT_RECIPIENT_TYPE = "PRCP"


@dataclass(frozen=True)
class RecipientService:
    """A HealthcareService and every resource it brings, in Bundle order (mapping.md section 1 step 7):
    the service, its Location (if any), its providedBy Organization and that Organization's partOf chain."""

    service: Json
    resources: list[Json]


def map_healthcare_services(ctx: MappingContext) -> list[RecipientService]:
    """The HealthcareServices of the PRCP recipients, in document order."""
    services = []
    for recipient in _RECIPIENTS(ctx.document):
        type_code = recipient.get("typeCode", DEFAULT_RECIPIENT_TYPE)
        if type_code != DEFAULT_RECIPIENT_TYPE:
            continue
        intended = hl7.one(_INTENDED_RECIPIENT, recipient)
        received = hl7.one(_RECEIVED_ORGANIZATION, intended)
        organizations = recipient_organization(ctx, received, type_code) if received is not None else []
        provider = organizations[0] if organizations else None
        location = recipient_location(ctx, intended, provider) if intended is not None else None
        name = hl7.one(_ORGANIZATION_NAME, received)
        content = hl7.compact(
            {
                "active": True,
                "providedBy": hl7.ref(provider) if provider is not None else None,
                "location": [hl7.ref(location)] if location is not None else None,
                "name": hl7.all_text(name) if name is not None else None,
                "telecom": hl7.each(_TELECOMS, intended, hl7.telecom),
            }
        )
        service = {**ctx.new_resource("HealthcareService"), **(content or {})}
        resources = [service, *([location] if location is not None else []), *organizations]
        services.append(RecipientService(service, resources))
    return services
