"""The MessageHeader (mapping.md section 2): the ITK message as a FHIR message event.

Its ``id`` is the SOAP ``wsa:MessageID`` verbatim, unlike every other resource id. Sender, enterer, author,
receiver, responsible, response and focus are not populated; the ITK trackingid is not mapped.
"""

from __future__ import annotations

from . import hl7
from .context import DOS_ADDRESS_TYPE, ODS_ADDRESS_PREFIX, EnvelopeFields, MappingContext
from .hl7 import Json

EVENT_SYSTEM = "https://fhir.nhs.uk/STU3/CodeSystem/EventType-1"
EVENT_DISPLAYS = {"referral-1": "Referral", "discharge-details-1": "Discharge Details"}
SOURCE_NAME = "NHS 111 Adaptor"

_EFFECTIVE_TIME = hl7.xpath("hl7:effectiveTime[1]")


def destination_endpoint(envelope: EnvelopeFields) -> str | None:
    """``<ODS uri>:DOSServiceID:<DoS id>`` from the ITK address list, skipping an absent part.

    ODS: the first address without ``@type`` whose uri is an ODS address; DoS: the first address typed as a
    DoS service id. The ODS part comes first whatever the order in the message.
    """
    addresses = envelope.addresses
    ods = next((uri for kind, uri in addresses if kind is None and uri.startswith(ODS_ADDRESS_PREFIX)), None)
    dos = next((uri for kind, uri in addresses if kind == DOS_ADDRESS_TYPE), None)
    parts = [part for part in (ods, f"DOSServiceID:{dos}" if dos is not None else None) if part is not None]
    return ":".join(parts) or None


def document_time(ctx: MappingContext) -> hl7.Timestamp:
    """``CD/hl7:effectiveTime/@value``, which every Encounter Report needs (MessageHeader.timestamp)."""
    element = hl7.one(_EFFECTIVE_TIME, ctx.document)
    ts = hl7.ts_of(element)
    if ts is None:
        raise hl7.MappingError("/ClinicalDocument/effectiveTime/@value", "missing")
    return ts


def map_message_header(ctx: MappingContext) -> Json:
    envelope = ctx.envelope
    event = envelope.event
    endpoint = destination_endpoint(envelope)
    content = hl7.compact(
        {
            "event": {"system": EVENT_SYSTEM, "code": event, "display": EVENT_DISPLAYS[event]},
            "destination": [{"endpoint": endpoint}] if endpoint else None,
            "timestamp": hl7.format_instant_ms(document_time(ctx)),
            "source": {"name": SOURCE_NAME, "endpoint": ctx.config.source_endpoint},
            "reason": {"coding": [{"system": envelope.interaction_key, "code": envelope.interaction}]},
        }
    )
    return {"resourceType": "MessageHeader", "id": envelope.message_id, **(content or {})}
