"""The Encounter (mapping.md section 3.1), its participants' individuals and its locations.

The participants are the people who took part in the 111 encounter, in a fixed order: (a) non-REFT
participants, (b) authors, (c) informants who are professionals (``hl7:assignedEntity``), (d) informants who
are related persons (``hl7:relatedEntity``), (e) the data enterer and (f) the responsible party. Their
Practitioner / RelatedPerson resources are built here because the Encounter is what introduces them to the
Bundle (section 1 step 4); the author and responsible-party Practitioners are shared with the
PractitionerRoles and the Composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import hl7
from .context import MappingContext
from .hl7 import Element, Json
from .location import incident_location, provider_location
from .organization import organization
from .practitioner import practitioner
from .related_person import informant

PARTICIPANT_TYPE_SYSTEM = "http://hl7.org/fhir/ValueSet/encounter-participant-type"
AUTHOR_TYPE = {"coding": [{"system": PARTICIPANT_TYPE_SYSTEM, "code": "PPRF", "display": "Author"}]}
RESPONSIBLE_PARTY_TYPE = {
    "coding": [{"system": PARTICIPANT_TYPE_SYSTEM, "code": "ATND", "display": "Responsible Party"}]
}
ENCOUNTER_TYPES = {
    "referral-1": "111 Encounter Referral",
    "discharge-details-1": "111 Encounter Copy for Information",
}

# -- participants --------------------------------------------------------------------------------------------
_PARTICIPANTS = hl7.xpath("hl7:participant[not(@typeCode = 'REFT')]")
_ASSOCIATED_ENTITY = hl7.xpath("hl7:associatedEntity[1]")
_PARTICIPATION_TIME = hl7.xpath("hl7:time[1]")
#: Authors taking part as authors (``@typeCode`` AUT, the CDA default).
_AUTHORS = hl7.xpath("hl7:author[not(@typeCode) or @typeCode = 'AUT']")
_ASSIGNED_AUTHOR = hl7.xpath("hl7:assignedAuthor[1]")
_INFORMANTS = hl7.xpath("hl7:informant")
_ASSIGNED_ENTITY = hl7.xpath("hl7:assignedEntity[1]")
_RELATED_ENTITY = hl7.xpath("hl7:relatedEntity[1]")
_RELATED_ENTITY_TIME = hl7.xpath("hl7:effectiveTime[1]")
_DATA_ENTERER = hl7.xpath("hl7:dataEnterer[1]")
_RESPONSIBLE_ENTITY = hl7.xpath(
    "hl7:componentOf/hl7:encompassingEncounter/hl7:responsibleParty[1]/hl7:assignedEntity[1]"
)

# -- the encounter itself (EE = hl7:componentOf/hl7:encompassingEncounter) -----------------------------------
_ENCOMPASSING_ENCOUNTER = hl7.xpath("hl7:componentOf/hl7:encompassingEncounter[1]")
_ENCOUNTER_IDS = hl7.xpath("hl7:id")
_ENCOUNTER_TIME = hl7.xpath("hl7:effectiveTime[1]")
#: ``hl7:text`` of the top-level encounter entries (the last one is the Encounter narrative).
_ENTRY_ENCOUNTER_TEXTS = hl7.xpath(
    "hl7:component/hl7:structuredBody/hl7:component/hl7:section/hl7:entry/hl7:encounter/hl7:text[1]"
)

# -- locations -----------------------------------------------------------------------------------------------
_PROVIDER_ORGANIZATIONS = hl7.xpath("hl7:recordTarget/hl7:patientRole[1]/hl7:providerOrganization[1]")
_PART_OF_TIME = hl7.xpath("hl7:asOrganizationPartOf[1]/hl7:effectiveTime[1]")
_INCIDENT_PLACE = hl7.xpath(
    "hl7:componentOf/hl7:encompassingEncounter/hl7:location/hl7:healthCareFacility/hl7:location[1]"
)


@dataclass
class Participants:
    """``Encounter.participant`` and the resources it introduces (Bundle order, section 1 step 4)."""

    entries: list[Json] = field(default_factory=list)
    individuals: list[Json] = field(default_factory=list)
    #: ``(hl7:assignedAuthor, Practitioner)`` for every AUT author, in document order.
    authors: list[tuple[Element, Json]] = field(default_factory=list)
    #: ``(hl7:assignedEntity, Practitioner)`` of the responsible party, if any.
    responsible_party: tuple[Element, Json] | None = None

    def add(self, individual: Json, type_: Json | None, period: Json | None = None) -> None:
        entry = hl7.compact({"type": [type_] if type_ else None, "period": period}) or {}
        self.entries.append({**entry, "individual": hl7.ref(individual)})
        self.individuals.append(individual)


def _text_type(type_code: str | None) -> Json | None:
    return {"text": type_code} if type_code is not None and type_code.strip() else None


def map_participants(ctx: MappingContext, patient: Json | None) -> Participants:
    """Every Encounter participant, in the order of section 3.1 (a)-(f)."""
    document = ctx.document
    found = Participants()
    for participant in _PARTICIPANTS(document):  # (a)
        entity = hl7.one(_ASSOCIATED_ENTITY, participant)
        if entity is not None:
            period = hl7.period(hl7.one(_PARTICIPATION_TIME, participant))
            found.add(practitioner(ctx, entity), _text_type(participant.get("typeCode")), period)
    for author in _AUTHORS(document):  # (b)
        assigned_author = hl7.one(_ASSIGNED_AUTHOR, author)
        if assigned_author is not None:
            author_practitioner = practitioner(ctx, assigned_author)
            found.add(author_practitioner, AUTHOR_TYPE)
            found.authors.append((assigned_author, author_practitioner))
    informants = _INFORMANTS(document)
    for informant_element in informants:  # (c)
        entity = hl7.one(_ASSIGNED_ENTITY, informant_element)
        if entity is not None:
            found.add(practitioner(ctx, entity), _text_type(informant_element.get("typeCode", "INF")))
    for informant_element in informants:  # (d)
        related = hl7.one(_RELATED_ENTITY, informant_element)
        if related is not None:
            type_ = {"text": "Informant"} if informant_element.get("typeCode", "INF") == "INF" else None
            period = hl7.period(hl7.one(_RELATED_ENTITY_TIME, related))
            found.add(informant(ctx, related, patient), type_, period)
    data_enterer = hl7.one(_DATA_ENTERER, document)  # (e)
    entity = hl7.one(_ASSIGNED_ENTITY, data_enterer)
    if data_enterer is not None and entity is not None:
        start = hl7.datetime_of(hl7.one(_PARTICIPATION_TIME, data_enterer))
        type_ = _text_type(data_enterer.get("typeCode", "ENT"))
        found.add(practitioner(ctx, entity), type_, {"start": start} if start else None)
    responsible = hl7.one(_RESPONSIBLE_ENTITY, document)  # (f)
    if responsible is not None:
        responsible_practitioner = practitioner(ctx, responsible)
        found.add(responsible_practitioner, RESPONSIBLE_PARTY_TYPE)
        found.responsible_party = (responsible, responsible_practitioner)
    return found


@dataclass
class Locations:
    """``Encounter.location`` and the resources it introduces (Bundle order, section 1 step 5)."""

    entries: list[Json] = field(default_factory=list)
    resources: list[Json] = field(default_factory=list)
    #: The managing Organization of each location that has one, in location order (the CarePlan authors).
    managing_organizations: list[Json] = field(default_factory=list)


def map_locations(ctx: MappingContext) -> Locations:
    """(a) each recordTarget's provider organisation (``active``), then (b) the incident location
    (``completed``)."""
    found = Locations()
    for provider in _PROVIDER_ORGANIZATIONS(ctx.document):
        organizations = organization(ctx, provider)
        location = provider_location(ctx, organizations[0])
        period = hl7.period(hl7.one(_PART_OF_TIME, provider))
        entry = {"location": hl7.ref(location), "status": "active", "period": period}
        found.entries.append(hl7.compact(entry))
        found.resources += [location, *organizations]
        found.managing_organizations.append(organizations[0])
    place = hl7.one(_INCIDENT_PLACE, ctx.document)
    if place is not None:
        location = incident_location(ctx, place)
        found.entries.append({"location": hl7.ref(location), "status": "completed"})
        found.resources.append(location)
    return found


def _narrative(ctx: MappingContext) -> Json | None:
    """The last top-level encounter entry's text, escaped (the reference does not escape: section 6.12)."""
    texts = _ENTRY_ENCOUNTER_TEXTS(ctx.document)
    div = hl7.text_div(hl7.first_text(texts[-1])) if texts else None
    return {"status": "generated", "div": div} if div is not None else None


def map_encounter(
    ctx: MappingContext,
    *,
    subject: Json | None,
    participants: Participants,
    locations: Locations,
    service_provider: Json | None,
    appointment: Json | None,
) -> Json:
    encompassing = hl7.one(_ENCOMPASSING_ENCOUNTER, ctx.document)
    content = hl7.compact(
        {
            "text": _narrative(ctx),
            "identifier": [
                {"system": id_.get("root"), "value": id_.get("extension")}
                for id_ in (_ENCOUNTER_IDS(encompassing) if encompassing is not None else [])
            ],
            "status": "finished",
            "type": [{"text": ENCOUNTER_TYPES[ctx.envelope.event]}],
            "subject": hl7.ref(subject) if subject is not None else None,
            "participant": participants.entries,
            "appointment": hl7.ref(appointment) if appointment is not None else None,
            "period": hl7.period(hl7.one(_ENCOUNTER_TIME, encompassing)),
            "location": locations.entries,
            "serviceProvider": hl7.ref(service_provider) if service_provider is not None else None,
        }
    )
    return {**ctx.new_resource("Encounter"), **(content or {})}
