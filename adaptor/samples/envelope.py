"""The SOAP 1.1 envelope and ITK Distribution Envelope around synthetic ClinicalDocuments (wire-contract.md §2).

:func:`build_envelope` writes a complete request the way live 111 senders do: WS-Addressing MessageID, Action
(``mustUnderstand``), To and anonymous ReplyTo; WS-Security Timestamp and Username; then the Distribution
Envelope with its address list, audit identity, manifest, sender address and interaction spec, and one payload
per document. :func:`soap_envelope` writes the SOAP part alone, around a Distribution Envelope made elsewhere
(``nhs111 send --wrap``). Every part can be replaced or left out (``None``), which is what the validation tests use to
break one rule at a time; the sample catalogue uses the defaults.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Literal

from lxml import etree

from adaptor.itk.wire import DOS_ADDRESS_TYPE, INTERACTION_KEY, ODS_ADDRESS_PREFIX, new_upper_uuid
from adaptor.itk.xmlsafe import ANONYMOUS, ITK, SOAP11, WSA, WSSE, WSU

#: What a service's short name (``SendNHS111Report-v2-0``, as IUC example envelopes write it) is short for.
SERVICE_PREFIX = "urn:nhs-itk:services:201005:"
SERVICE = f"{SERVICE_PREFIX}SendNHS111Report-v2-0"
PROFILE = "urn:nhs-en:profile:nhs111CDADocument-v2-0"
#: The adaptor's default endpoint (``PEM111_SOAP_SEND_TO``): what a sender configured for it writes in wsa:To.
ENDPOINT = "http://localhost:8080/report"
#: Lifetime of the WS-Security Timestamp: live senders use 5-15 minutes.
TIMESTAMP_TTL = timedelta(minutes=10)

Encoding = Literal["base64", "gzip"]


def xs_datetime(moment: datetime) -> str:
    """An xs:dateTime in UTC with milliseconds and ``Z``, as WS-Security Timestamps are written."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def ods_address(code: str) -> tuple[str, str | None]:
    """An ``itk:address`` (uri, type) for an ODS code: ``@type`` absent means an ITK address."""
    return (f"{ODS_ADDRESS_PREFIX}{code}", None)


def dos_address(service_id: str) -> tuple[str, str | None]:
    """An ``itk:address`` (uri, type) for a Directory of Services id."""
    return (service_id, DOS_ADDRESS_TYPE)


def _sub(parent: etree._Element, ns: str, name: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ns}}}{name}", attrib)
    element.text = text
    return element


def build_envelope(
    documents: Sequence[etree._Element],
    *,
    message_id: str | None = None,
    action: str = SERVICE,
    service: str | None = None,
    to: str | None = ENDPOINT,
    reply_to: str | None = ANONYMOUS,
    timestamp: tuple[datetime, datetime] | Literal["now"] | None = "now",
    username: str | None = None,
    security: bool = True,
    tracking_id: str | None = None,
    addresses: Sequence[tuple[str, str | None]] | None = None,
    audit_ids: Sequence[str] | None = None,
    sender_address: str | None = None,
    interaction: str | None = None,
    extra_specs: Sequence[tuple[str, str]] = (),
    profile_id: str | None = PROFILE,
    encoding: Encoding | None = None,
) -> etree._Element:
    """A SOAP request carrying ``documents`` (each becomes one payload); every argument replaces one part.

    ``None`` leaves a part out; ``message_id`` and ``tracking_id`` default to new UUIDs and ``service`` to
    ``action``. ``timestamp`` is ``(created, expires)`` or ``"now"`` (created now, expires after
    :data:`TIMESTAMP_TTL`). ``interaction`` is written as given (full URN or bare name). ``encoding`` carries
    the documents as base64 (``"base64"``) or gzip-then-base64 (``"gzip"``) text instead of XML.
    """
    distribution_envelope = etree.Element(f"{{{ITK}}}DistributionEnvelope", nsmap={"itk": ITK})
    itk_header = _sub(
        distribution_envelope, ITK, "header", service=service or action, trackingid=tracking_id or new_upper_uuid()
    )
    if addresses is not None:
        address_list = _sub(itk_header, ITK, "addresslist")
        for uri, address_type in addresses:
            address = _sub(address_list, ITK, "address", uri=uri)
            if address_type is not None:
                address.set("type", address_type)
    if audit_ids is not None:
        audit = _sub(itk_header, ITK, "auditIdentity")
        for uri in audit_ids:
            _sub(audit, ITK, "id", uri=uri)
    payload_ids = ["uuid_" + new_upper_uuid() for _ in documents]
    manifest = _sub(itk_header, ITK, "manifest", count=str(len(documents)))
    for payload_id in payload_ids:
        item = _sub(manifest, ITK, "manifestitem", id=payload_id, mimetype="text/xml")
        if profile_id is not None:
            item.set("profileid", profile_id)
        if encoding is not None:
            item.set("base64", "true")
        if encoding == "gzip":
            item.set("compressed", "true")
    if sender_address is not None:
        _sub(itk_header, ITK, "senderAddress", uri=sender_address)
    specs = ([(INTERACTION_KEY, interaction)] if interaction is not None else []) + list(extra_specs)
    if specs:
        handling = _sub(itk_header, ITK, "handlingSpecification")
        for key, value in specs:
            _sub(handling, ITK, "spec", key=key, value=value)

    payloads = _sub(distribution_envelope, ITK, "payloads", count=str(len(documents)))
    for payload_id, document in zip(payload_ids, documents, strict=True):
        payload = _sub(payloads, ITK, "payload", id=payload_id)
        if encoding is None:
            payload.append(document)
        else:
            data = etree.tostring(document, xml_declaration=True, encoding="UTF-8")
            packed = gzip.compress(data) if encoding == "gzip" else data
            payload.text = base64.b64encode(packed).decode("ascii")
    return soap_envelope(
        distribution_envelope,
        message_id=message_id,
        action=action,
        to=to,
        reply_to=reply_to,
        timestamp=timestamp,
        username=username,
        security=security,
    )


def soap_envelope(
    distribution_envelope: etree._Element,
    *,
    message_id: str | None = None,
    action: str = SERVICE,
    to: str | None = ENDPOINT,
    reply_to: str | None = ANONYMOUS,
    timestamp: tuple[datetime, datetime] | Literal["now"] | None = "now",
    username: str | None = None,
    security: bool = True,
) -> etree._Element:
    """A SOAP request whose body is ``distribution_envelope`` (moved into it), under a header of its own:
    MessageID (a new UUID unless given), Action and To (``mustUnderstand``), ReplyTo, and the WS-Security
    Timestamp and Username (see :func:`build_envelope` for the arguments; ``None`` leaves a part out)."""
    envelope = etree.Element(f"{{{SOAP11}}}Envelope", nsmap={"soap": SOAP11, "wsa": WSA})
    header = _sub(envelope, SOAP11, "Header")
    _sub(header, WSA, "MessageID", message_id if message_id is not None else new_upper_uuid())
    _sub(header, WSA, "Action", action).set(f"{{{SOAP11}}}mustUnderstand", "1")
    if to is not None:
        _sub(header, WSA, "To", to).set(f"{{{SOAP11}}}mustUnderstand", "1")
    if reply_to is not None:
        _sub(_sub(header, WSA, "ReplyTo"), WSA, "Address", reply_to)
    if security:
        _security(header, timestamp, username)
    _sub(envelope, SOAP11, "Body").append(distribution_envelope)
    return envelope


def _security(
    header: etree._Element, timestamp: tuple[datetime, datetime] | Literal["now"] | None, username: str | None
) -> None:
    security = etree.SubElement(header, f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    if timestamp is not None:
        if timestamp == "now":
            created = datetime.now(UTC)
            expires = created + TIMESTAMP_TTL
        else:
            created, expires = timestamp
        stamp = _sub(security, WSU, "Timestamp")
        stamp.set(f"{{{WSU}}}Id", "uuid_" + new_upper_uuid())
        _sub(stamp, WSU, "Created", xs_datetime(created))
        _sub(stamp, WSU, "Expires", xs_datetime(expires))
    if username is not None:
        _sub(_sub(security, WSSE, "UsernameToken"), WSSE, "Username", username)


def to_bytes(root: etree._Element) -> bytes:
    """The request as UTF-8 bytes with an XML declaration."""
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
