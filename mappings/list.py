"""The List (mapping.md section 3.20): an index of the report's dated and undated clinical resources.

Members are the Bundle's Conditions, Questionnaires, QuestionnaireResponses, Observations, Organizations,
Practitioners, ReferralRequests and RelatedPersons. They are ordered as the reference orders them: undated
ones first, then by date, newest first; ties keep Bundle order. No ``identifier`` (the reference builds one
and never attaches it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from . import hl7
from .context import MappingContext
from .hl7 import Json

TRIAGE_CODE = {"coding": [{"system": "http://snomed.info/sct", "code": "225390008", "display": "Triage"}]}
ORDERED_BY = {
    "coding": [
        {"system": "http://hl7.org/fhir/list-order", "code": "event-date", "display": "Sorted by Event Date"}
    ]
}

#: The member types and where each one's date is (``None``: the type is undated).
MEMBER_DATES: dict[str, Callable[[Json], str | None] | None] = {
    "Condition": lambda r: r.get("assertedDate"),
    "Questionnaire": lambda r: r.get("date"),
    "QuestionnaireResponse": lambda r: r.get("authored"),
    "ReferralRequest": lambda r: r.get("authoredOn"),
    "RelatedPerson": lambda r: (r.get("period") or {}).get("end"),
    "Observation": None,
    "Organization": None,
    "Practitioner": None,
}

_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime[1]")


def _moment(value: str) -> datetime:
    """A FHIR date or dateTime as an instant for ordering (dates: midnight UTC; partial dates padded)."""
    if "T" not in value:
        year, month, day = (value.split("-") + ["01", "01"])[:3]
        return datetime(int(year), int(month), int(day), tzinfo=UTC)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ordered_members(resources: list[Json]) -> list[Json]:
    undated: list[Json] = []
    dated: list[tuple[datetime, Json]] = []
    moments: dict[str, datetime] = {}  # a triage's many pairs share one date: parse each text once
    for resource in resources:
        resource_type = resource["resourceType"]
        if resource_type not in MEMBER_DATES:
            continue
        date_of = MEMBER_DATES[resource_type]
        value = date_of(resource) if date_of is not None else None
        if value is None:
            undated.append(resource)
            continue
        moment = moments.get(value)
        if moment is None:
            moment = moments[value] = _moment(value)
        dated.append((moment, resource))
    dated.sort(key=lambda pair: pair[0], reverse=True)  # stable: ties keep Bundle order
    return undated + [resource for _, resource in dated]


def map_list(
    ctx: MappingContext, *, subject: Json | None, encounter: Json, device: Json, resources: list[Json]
) -> Json:
    """The List over ``resources`` (every resource already in the Bundle, in Bundle order)."""
    content = hl7.compact(
        {
            "status": "current",
            "mode": "working",
            "title": "111 Report List",
            "code": TRIAGE_CODE,
            "subject": hl7.ref(subject) if subject is not None else None,
            "encounter": hl7.ref(encounter),
            "date": hl7.datetime_of(hl7.one(_EFFECTIVE_TIME, ctx.document)),
            "source": hl7.ref(device),
            "orderedBy": ORDERED_BY,
            "entry": [{"item": hl7.ref(member)} for member in _ordered_members(resources)],
        }
    )
    return {**ctx.new_resource("List"), **(content or {})}
