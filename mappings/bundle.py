"""The orchestrator: one selected ClinicalDocument → one FHIR STU3 Encounter Report message Bundle.

Resources are *built* in dependency order (a resource can only reference one that already has an id) and
*emitted* in the reference adaptor's entry order (mapping.md section 1), which is kept although parity ignores
order. Each resource appears exactly once.
"""

from __future__ import annotations

from . import hl7
from .appointment import map_appointment
from .care_plan import map_care_plans
from .composition import map_composition
from .condition import map_condition
from .consent import map_consent
from .context import MappingContext
from .device import map_device
from .encounter import map_encounter, map_locations, map_participants
from .healthcare_service import map_healthcare_services
from .hl7 import Json
from .list import map_list
from .message_header import map_message_header
from .observation import map_observations
from .organization import service_provider as map_service_provider
from .patient import map_subject
from .practitioner_role import practitioner_role
from .procedure_request import map_procedure_request
from .questionnaire import map_triage
from .referral_request import map_referral_request, referred_to_practitioners
from .related_person import map_emergency_contact

_VERSION_NUMBER = hl7.xpath("hl7:versionNumber[1]")


def _version_number(ctx: MappingContext) -> str | None:
    """``CD/hl7:versionNumber/@value`` as an integer string; omitted when absent or not an integer."""
    element = hl7.one(_VERSION_NUMBER, ctx.document)
    value = (element.get("value") if element is not None else None) or ""
    try:
        return str(int(value.strip()))
    except ValueError:
        return None


def encounter_report(ctx: MappingContext) -> Json:
    """The Encounter Report Bundle for ``ctx.document``. Raises :class:`hl7.MappingError` for a document that
    cannot be mapped (e.g. no usable ``effectiveTime``)."""
    message_header = map_message_header(ctx)

    # Who and where: the Encounter's subject, participants, locations and service provider.
    service_provider = map_service_provider(ctx)
    subject = map_subject(ctx)
    participants = map_participants(ctx, subject.patient)
    locations = map_locations(ctx)
    appointment = map_appointment(ctx, subject.patient)
    encounter = map_encounter(
        ctx,
        subject=subject.subject,
        participants=participants,
        locations=locations,
        service_provider=service_provider,
        appointment=appointment[0] if appointment is not None else None,
    )

    # What happened: triage, the presenting condition, the referral and the 111 disposition.
    device = map_device(ctx)
    triage = map_triage(ctx, subject.subject, encounter)
    questionnaire_responses = [response for response, _ in triage]
    condition = map_condition(ctx, subject.subject, encounter, questionnaire_responses)
    procedure_request = map_procedure_request(ctx, subject.subject, condition)
    services = map_healthcare_services(ctx)
    referred_to = referred_to_practitioners(ctx)
    referral_request = map_referral_request(
        ctx,
        subject=subject.subject,
        encounter=encounter,
        device=device,
        service_provider=service_provider,
        condition=condition,
        procedure_request=procedure_request,
        recipients=referred_to + [recipient.service for recipient in services],
    )
    care_plans = map_care_plans(ctx, subject.subject, encounter, condition, locations.managing_organizations)
    author_practitioners = [author for _, author in participants.authors]
    composition = map_composition(
        ctx,
        subject.subject,
        encounter,
        author_practitioners,
        care_plans,
        referral_request,
        questionnaire_responses,
    )
    consent = map_consent(ctx, subject.patient, encounter, service_provider)
    observations = map_observations(ctx, subject.subject, encounter)

    roles: list[Json] = []
    for entity, author in participants.authors:
        roles += practitioner_role(ctx, entity, author)
    if participants.responsible_party is not None:
        roles += practitioner_role(ctx, *participants.responsible_party)
    emergency_contact = map_emergency_contact(ctx, subject.patient)

    resources: list[Json] = [
        message_header,
        encounter,
        *([service_provider] if service_provider is not None else []),
        *participants.individuals,
        *locations.resources,
        *subject.resources,
        *(resource for recipient in services for resource in recipient.resources),
        referral_request,
        *([procedure_request] if procedure_request is not None else []),
        *referred_to,
        *([appointment[0], *appointment[1]] if appointment is not None else []),
        composition,
        *care_plans,
        consent,
        condition,
        *(resource for pair in triage for resource in pair),
        *observations,
        *roles,
        *([emergency_contact] if emergency_contact is not None else []),
        device,
    ]
    resources.append(
        map_list(ctx, subject=subject.subject, encounter=encounter, device=device, resources=resources)
    )

    identifier: Json = {"type": {"text": "ClinicalDocument VersionNumber"}}
    version = _version_number(ctx)
    if version is not None:
        identifier["value"] = version
    # The resources are already compact: the shell is assembled directly rather than walked again.
    return {
        "resourceType": "Bundle",
        "meta": {"lastUpdated": hl7.format_millis(ctx.now)},
        "identifier": identifier,
        "type": "message",
        "entry": [{"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource} for resource in resources],
    }
