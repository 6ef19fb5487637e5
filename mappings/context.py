"""What every resource mapper receives: the selected ClinicalDocument, a few envelope fields, settings, the clock.

The mapping layer never reads the SOAP/ITK envelope itself; :mod:`adaptor.convert` fills :class:`EnvelopeFields`.
"""

from __future__ import annotations

import enum
import hashlib
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


class Unread(enum.Enum):
    """The type of :data:`UNREAD`."""

    UNREAD = "unread"


#: :attr:`MappingContext.pathways_case` when the caller has not read the case: the mapping reads it.
UNREAD = Unread.UNREAD


@dataclass
class MappingContext:
    """One conversion: inputs plus an id source. Mappers read from it and never mutate the document."""

    document: Element
    envelope: EnvelopeFields
    config: MappingConfig = field(default_factory=MappingConfig)
    #: The conversion time (Bundle.meta.lastUpdated, ReferralRequest.authoredOn fallback).
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    #: Where the resource ids come from: ``None`` draws each at random; a text (the adaptor passes the stored
    #: message's record id) draws them from a hash of it, so that converting the same message again gives its
    #: resources the same ids (a new version of a Bundle keeps the ids of the one it replaces).
    id_seed: str | None = None
    #: The document's Pathways case as :func:`mappings.questionnaire.parse_case` read it (``None``: there is none
    #: that can be read), when the caller has read it already; :data:`UNREAD`: the mapping reads it itself.
    pathways_case: Element | None | Unread = UNREAD
    _issued: dict[str, int] = field(default_factory=dict, init=False, repr=False)

    def new_resource(self, resource_type: str) -> Json:
        """A new resource dict with a lower-case UUID v4 ``id``: random, or the next one drawn from
        :attr:`id_seed` for this resource type (the n-th Observation of a seed always gets the same id)."""
        if self.id_seed is None:
            return {"resourceType": resource_type, "id": str(uuid.uuid4())}
        count = self._issued[resource_type] = self._issued.get(resource_type, 0) + 1
        # The hash stands in for the random bits of a version-4 UUID; the version and variant bits are set as
        # for any v4 UUID, so the ids have the shape the mapping specification gives them.
        digest = hashlib.sha256(f"{self.id_seed}\n{resource_type}\n{count}".encode()).digest()
        return {"resourceType": resource_type, "id": str(uuid.UUID(bytes=digest[:16], version=4))}
