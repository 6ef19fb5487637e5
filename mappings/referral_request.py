"""The ReferralRequest (mapping.md section 3.10) and the Practitioners it is addressed to (REFT
participants)."""

from __future__ import annotations

from . import hl7
from .context import MappingContext
from .hl7 import Json
from .practitioner import practitioner

_REFERRED_TO = hl7.xpath("hl7:participant[@typeCode = 'REFT']/hl7:associatedEntity")
_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime[1]")
#: The first author taking part as an author (``@typeCode`` AUT, the default when absent).
_FIRST_AUTHOR_TIME = hl7.xpath("hl7:author[not(@typeCode) or @typeCode = 'AUT'][1]/hl7:time[1]")


def referred_to_practitioners(ctx: MappingContext) -> list[Json]:
    """One Practitioner per ``hl7:participant[@typeCode='REFT']/hl7:associatedEntity``, in document order."""
    return [practitioner(ctx, entity) for entity in _REFERRED_TO(ctx.document)]


def _authored_on(ctx: MappingContext) -> str:
    """When the first author wrote the report; the conversion time (seconds) when no author says."""
    authored = hl7.datetime_of(hl7.one(_FIRST_AUTHOR_TIME, ctx.document))
    return authored if authored is not None else hl7.format_seconds(ctx.now)


def map_referral_request(
    ctx: MappingContext,
    *,
    subject: Json | None,
    encounter: Json,
    device: Json,
    service_provider: Json | None,
    condition: Json,
    procedure_request: Json | None,
    recipients: list[Json],
) -> Json:
    """The referral. ``recipients`` are the REFT Practitioners followed by the HealthcareServices."""
    content = hl7.compact(
        {
            "status": "active",
            "intent": "plan",
            "priority": "routine",
            "subject": hl7.ref(subject) if subject is not None else None,
            "context": hl7.ref(encounter),
            "occurrencePeriod": {"start": hl7.datetime_of(hl7.one(_EFFECTIVE_TIME, ctx.document))},
            "authoredOn": _authored_on(ctx),
            "requester": {
                "agent": hl7.ref(device),
                "onBehalfOf": hl7.ref(service_provider) if service_provider is not None else None,
            },
            "recipient": [hl7.ref(recipient) for recipient in recipients],
            "reasonReference": [hl7.ref(condition)],
            "supportingInfo": [hl7.ref(procedure_request)] if procedure_request is not None else None,
        }
    )
    return {**ctx.new_resource("ReferralRequest"), **(content or {})}
