"""Organization resources (mapping.md section 3.2): the common rule ``ORG(x)`` and its variants (a)-(f).

Every organisation element except the custodian may name the organisation it is part of
(``hl7:asOrganizationPartOf/hl7:wholeOrganization``). Such an Organization is returned *followed by its partOf
chain* (parent, grandparent, ...), because the Bundle must carry every Organization a ``partOf`` points at
(mapping.md sections 1 and 6.12). Callers therefore always receive a list whose first item is the organisation
itself.
"""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json

# -- ORG(x) --------------------------------------------------------------------------------------------------
_IDS_WITH_EXTENSION = hl7.xpath("hl7:id[@extension]")
_FIRST_NAME = hl7.xpath("hl7:name[1]")
_TELECOMS = hl7.xpath("hl7:telecom")
_ADDRESSES = hl7.xpath("hl7:addr")
_INDUSTRY_CLASS = hl7.xpath("hl7:standardIndustryClassCode[1]")
_WHOLE_ORGANIZATION = hl7.xpath("hl7:asOrganizationPartOf/hl7:wholeOrganization[1]")

# -- (a) service provider ------------------------------------------------------------------------------------
_CUSTODIAN = hl7.xpath("hl7:custodian[1]")
_CUSTODIAN_ORGANIZATION = hl7.xpath("hl7:assignedCustodian/hl7:representedCustodianOrganization[1]")
_FIRST_TELECOM = hl7.xpath("hl7:telecom[1]")
_FIRST_ADDRESS = hl7.xpath("hl7:addr[1]")


def organization(ctx: MappingContext, element: Element, *, org_type: list[Json] | None = None) -> list[Json]:
    """``ORG(element)`` followed by the Organizations of its partOf chain.

    ``org_type`` replaces the ``type`` taken from ``hl7:standardIndustryClassCode`` (the recipient variant).
    """
    parent_element = hl7.one(_WHOLE_ORGANIZATION, element)
    chain = organization(ctx, parent_element) if parent_element is not None else []
    industry_class = hl7.one(_INDUSTRY_CLASS, element)
    if org_type is None and industry_class is not None:
        org_type = [{"text": industry_class.get("displayName")}]
    content = hl7.compact(
        {
            "identifier": [{"value": id_.get("extension")} for id_ in _IDS_WITH_EXTENSION(element)],
            "type": org_type,
            "name": hl7.first_text(hl7.one(_FIRST_NAME, element)),
            "telecom": hl7.each(_TELECOMS, element, hl7.telecom),
            "address": hl7.each(_ADDRESSES, element, hl7.address),
            "partOf": hl7.ref(chain[0]) if chain else None,
        }
    )
    return [{**ctx.new_resource("Organization"), **(content or {})}, *chain]


def recipient_organization(ctx: MappingContext, received: Element, recipient_type_code: str) -> list[Json]:
    """Variant (d): ``ORG(receivedOrganization)`` typed by the ``hl7:informationRecipient/@typeCode``."""
    display = hl7.first_text(hl7.one(_FIRST_NAME, received))
    org_type = hl7.compact([{"coding": [{"code": recipient_type_code, "display": display}]}])
    return organization(ctx, received, org_type=org_type)


def service_provider(ctx: MappingContext) -> Json | None:
    """Variant (a): the custodian organisation (``Encounter.serviceProvider``); ``None`` without a custodian.

    No identifier and no partOf, unlike ``ORG(x)``; ``type`` carries the custodian's ``@typeCode`` as written.
    """
    custodian = hl7.one(_CUSTODIAN, ctx.document)
    if custodian is None:
        return None
    represented = hl7.one(_CUSTODIAN_ORGANIZATION, custodian)
    type_code = custodian.get("typeCode")
    content: Json = {"active": True, "type": [{"text": type_code}] if type_code is not None else None}
    if represented is not None:
        content["name"] = hl7.first_text(hl7.one(_FIRST_NAME, represented))
        content["telecom"] = [hl7.telecom(hl7.one(_FIRST_TELECOM, represented))]
        content["address"] = [hl7.address(hl7.one(_FIRST_ADDRESS, represented))]
    return {**ctx.new_resource("Organization"), **(hl7.compact(content) or {})}
