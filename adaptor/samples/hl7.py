"""HL7 v3 data types and the small pieces every CDA participation is made of, as :mod:`.cda` writes them.

Each function appends one element (in the HL7 namespace unless said otherwise) to ``parent``: a templateId or
NPfIT contentId, an address, telecoms, a person name, a person, an organisation (with the one it is part of), a
coded value or an interval. :mod:`.cda` puts them together in the order of ``POCD_MT000002UK01``.
"""

from __future__ import annotations

from lxml import etree

from adaptor.itk.xmlsafe import HL7, NPFITLC
from adaptor.samples.model import Address, Name, Organisation, Telecom

XSI = "http://www.w3.org/2001/XMLSchema-instance"

#: OIDs of the NHS CDA "on the wire" conventions: content ids, template ids, ODS organisation codes.
CONTENT_ID_ROOT = "2.16.840.1.113883.2.1.3.2.4.18.16"
TEMPLATE_ROOT = "2.16.840.1.113883.2.1.3.2.4.18.2"
ODS_CODE = "2.16.840.1.113883.2.1.3.2.4.19.1"


def el(parent: etree._Element, name: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{HL7}}}{name}", attrib)
    element.text = text
    return element


def content_id(parent: etree._Element, extension: str) -> None:
    etree.SubElement(parent, f"{{{NPFITLC}}}contentId", root=CONTENT_ID_ROOT, extension=extension)


def template_id(parent: etree._Element, extension: str) -> None:
    el(parent, "templateId", root=TEMPLATE_ROOT, extension=extension)


def typed(element: etree._Element, xsi_type: str) -> etree._Element:
    element.set(f"{{{XSI}}}type", xsi_type)
    return element


def addr(parent: etree._Element, address: Address) -> None:
    element = el(parent, "addr", use=address.use)
    for line in address.lines:
        el(element, "streetAddressLine", line)
    if address.city:
        el(element, "city", address.city)
    if address.county:
        el(element, "county", address.county)
    if address.postcode:
        el(element, "postalCode", address.postcode)
    if address.directions:
        el(element, "desc", address.directions)


def telecoms(parent: etree._Element, values: tuple[Telecom, ...]) -> None:
    for telecom in values:
        element = el(parent, "telecom", value=telecom.value)
        if telecom.use:
            element.set("use", telecom.use)


def person_name(parent: etree._Element, name: Name) -> None:
    element = el(parent, "name")
    if name.text:
        element.text = name.text
        return
    if name.prefix:
        el(element, "prefix", name.prefix)
    for given in name.given:
        el(element, "given", given)
    if name.family:
        el(element, "family", name.family)


def person(parent: etree._Element, tag: str, template: str, name: Name) -> None:
    element = el(parent, tag, classCode="PSN", determinerCode="INSTANCE")
    template_id(element, template)
    person_name(element, name)


def org(parent: etree._Element, tag: str, template: str, organisation: Organisation) -> None:
    """An Organization-typed element: id (ODS), name, telecom, addr, kind, and the organisation it belongs to."""
    element = el(parent, tag, classCode="ORG", determinerCode="INSTANCE")
    template_id(element, template)
    el(element, "id", root=ODS_CODE, extension=organisation.ods)
    el(element, "name", organisation.name)
    telecoms(element, organisation.telecoms)
    if organisation.address is not None:
        addr(element, organisation.address)
    if organisation.kind is not None:
        code, display = organisation.kind
        el(
            element,
            "standardIndustryClassCode",
            code=code,
            codeSystem="2.16.840.1.113883.2.1.3.2.4.17.289",
            displayName=display,
        )
    if organisation.part_of is not None:
        part_of = el(element, "asOrganizationPartOf", classCode="PART")
        template_id(part_of, template.split("#")[0] + "#asOrganizationPartOf")
        org(part_of, "wholeOrganization", template.split("#")[0] + "#wholeOrganization", organisation.part_of)


def coded(parent: etree._Element, name: str, value: tuple[str, str], system: str) -> etree._Element:
    code, display = value
    return el(parent, name, code=code, codeSystem=system, displayName=display)


def interval(parent: etree._Element, name: str, low: str | None, high: str | None) -> etree._Element:
    element = el(parent, name)
    if low is not None:
        el(element, "low", value=low)
    if high is not None:
        el(element, "high", value=high)
    return element
