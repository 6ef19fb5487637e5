"""What every resource mapper receives: the selected ClinicalDocument, a few envelope fields, settings, the clock.

The mapping layer never reads the SOAP/ITK envelope itself; :mod:`adaptor.convert` fills :class:`EnvelopeFields`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .hl7 import Element, Json

INTERACTION_KEY = "urn:nhs-itk:ns:201005:interaction"
INTERACTION_PREFIX = "urn:nhs-itk:interaction:"
DOS_ADDRESS_TYPE = "2.16.840.1.113883.2.1.3.2.4.18.44"
ODS_ADDRESS_PREFIX = "urn:nhs-uk:addressing:ods:"


@dataclass(frozen=True)
class EnvelopeFields:
    """The envelope facts the Bundle carries (wire-contract.md section 3, "Wire fields the mapping consumes")."""

    message_id: str
    #: The ``itk:spec`` value for key ``urn:nhs-itk:ns:201005:interaction``, e.g.
    #: ``urn:nhs-itk:interaction:primaryEmergencyDepartmentRecipientNHS111CDADocument-v2-0``.
    interaction: str
    interaction_key: str = INTERACTION_KEY
    #: Every ``itk:address`` in order, as ``(type or None, uri)``.
    addresses: tuple[tuple[str | None, str], ...] = ()

    @property
    def event(self) -> str:
        """``referral-1`` for ``primary*`` interactions, ``discharge-details-1`` for ``copy*``."""
        name = self.interaction
        if name.lower().startswith(INTERACTION_PREFIX):
            name = name[len(INTERACTION_PREFIX) :]
        return "discharge-details-1" if name.lower().startswith("copy") else "referral-1"


@dataclass(frozen=True)
class MappingConfig:
    """The settings that appear in the Bundle."""

    #: MessageHeader.source.endpoint (``PEM111_SOAP_SEND_TO``).
    source_endpoint: str = "http://localhost:8080/report"
    #: Device.version (``PEM111_VERSION``).
    device_version: str = "1.0.3"


@dataclass
class MappingContext:
    """One conversion: inputs plus an id source. Mappers read from it and never mutate the document."""

    document: Element
    envelope: EnvelopeFields
    config: MappingConfig = field(default_factory=MappingConfig)
    #: The conversion time (Bundle.meta.lastUpdated, ReferralRequest.authoredOn fallback).
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def new_resource(self, resource_type: str) -> Json:
        """A new resource dict with a fresh lower-case UUID v4 ``id``."""
        return {"resourceType": resource_type, "id": str(uuid.uuid4())}
