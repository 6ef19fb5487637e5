"""PractitionerRole resources (mapping.md section 3.7): one per AUT author and one for the responsible party.

Only ``practitioner``, ``organization`` and ``code`` are set (no active, period or specialty).
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json
from .organization import organization

#: ``hl7:assignedAuthor`` / ``hl7:assignedEntity`` children.
_ROLE_CODE = hl7.xpath("hl7:code[1]")
_REPRESENTED_ORGANIZATION = hl7.xpath("hl7:representedOrganization[1]")


def practitioner_role(ctx: MappingContext, entity: Element, practitioner: Json) -> list[Json]:
    """The PractitionerRole of ``entity`` (assignedAuthor or assignedEntity) for ``practitioner``, followed by
    its Organization and that Organization's partOf chain (Bundle order, mapping.md section 1 step 15).

    Without ``hl7:representedOrganization`` (or ``hl7:code``) that element is omitted (section 6.12).
    """
    represented = hl7.one(_REPRESENTED_ORGANIZATION, entity)
    organizations = organization(ctx, represented) if represented is not None else []
    content = hl7.compact(
        {
            "practitioner": hl7.ref(practitioner),
            "organization": hl7.ref(organizations[0]) if organizations else None,
            "code": [{"coding": [hl7.coding(hl7.one(_ROLE_CODE, entity))]}],
        }
    )
    return [{**ctx.new_resource("PractitionerRole"), **(content or {})}, *organizations]
