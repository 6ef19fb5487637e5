"""The validated inbound message: everything later stages need from the ITK envelope, and nothing more."""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree


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
    event: str  # "referral-1" or "discharge-details-1"
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
    warnings: tuple[str, ...] = ()
