"""The validated inbound message: everything later stages need from the ITK envelope, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from adaptor.itk.wire import NULLIFICATION
from mappings.context import UNREAD, Unread

#: The Pathways case of the selected document as rule D6 read it (:func:`mappings.questionnaire.parse_case`):
#: ``None`` when it has none that can be read, :data:`~mappings.context.UNREAD` when D6 did not run.
PathwaysCase = etree._Element | None | Unread


@dataclass(frozen=True)
class Address:
    """One ``itk:address``: ``type`` is ``None`` when the attribute is absent (an ITK address by default; the
    types are in :mod:`adaptor.itk.wire`)."""

    uri: str
    type: str | None = None


@dataclass(frozen=True)
class ItkMessage:
    """An ITK request that passed every validation rule.

    ``documents`` are the decoded ClinicalDocuments in payload order and ``selected`` the one that is mapped
    (newest effectiveTime, first on a tie: wire-contract.md section 2).
    """

    message_id: str
    action: str
    tracking_id: str
    service: str
    interaction: str
    event: str  # "referral-1", "discharge-details-1", or NULLIFICATION ("nullification")
    addresses: tuple[Address, ...]
    ods_codes: tuple[str, ...]  # ODS codes from the ITK addresses (first ':'-token after the ODS prefix)
    dos_ids: tuple[str, ...]
    sender: str  # auditIdentity ODS uri, e.g. urn:nhs-uk:identity:ods:RYE
    sender_address: str | None
    ack_requested: bool
    inf_ack_requested: bool
    username: str | None
    #: sha256 (hex) of the canonical DistributionEnvelope: identifies an identical resend (section 5.3).
    digest: str
    documents: tuple[etree._Element, ...] = field(repr=False)
    selected: etree._Element = field(repr=False)
    #: What the mapping is given as the case (:attr:`mappings.context.MappingContext.pathways_case`), so that the
    #: attachment is decoded and parsed once, and what D6 said of it is what the mapping sees.
    pathways_case: PathwaysCase = field(default=UNREAD, repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def is_nullification(self) -> bool:
        """A nullification: the sender withdraws a document it sent before (nullification.md)."""
        return self.event == NULLIFICATION
