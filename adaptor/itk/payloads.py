"""ClinicalDocuments out of an ``itk:DistributionEnvelope``: decode payloads and pick the one to map.

Used by validation (rules D1-D3) and by :func:`adaptor.delivery.conversion.convert`, so both always agree on
which document is the Encounter Report.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from dataclasses import dataclass

from lxml import etree

from adaptor.itk.xmlsafe import HL7, XmlRejected, parse_xml, xpath, xpath_values
from mappings.hl7 import Timestamp, parse_ts

_MANIFEST_ITEMS = xpath("itk:header/itk:manifest/itk:manifestitem")
_PAYLOADS = xpath("itk:payloads/itk:payload")
_EFFECTIVE_TIME = xpath_values("hl7:effectiveTime/@value")
CLINICAL_DOCUMENT = f"{{{HL7}}}ClinicalDocument"

#: A decoded payload may not be larger than this (a gzip bomb is refused, not inflated).
MAX_DECODED_BYTES = 50 * 1024 * 1024


class PayloadError(ValueError):
    """A payload could not be decoded, gunzipped or parsed (rule D1). ``str(exc)`` is safe to show."""


class DocumentTimeError(ValueError):
    """A ClinicalDocument's effectiveTime is missing or not an HL7 timestamp (rule D3)."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


def _gunzip(data: bytes) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_DECODED_BYTES + 1)
    if len(out) > MAX_DECODED_BYTES or inflater.unconsumed_tail:
        raise PayloadError("decompressed payload is too large")
    return out


def _decode(payload: etree._Element, compressed: bool) -> etree._Element | None:
    """The root element carried as base64 (optionally gzip) text in ``payload``."""
    text = "".join(str(part) for part in payload.itertext()).strip()
    if not text:
        return None
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadError("payload is not valid base64") from None
    if compressed:
        try:
            data = _gunzip(data)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile):
            raise PayloadError("payload is not valid gzip data") from None
    try:
        return parse_xml(data)
    except XmlRejected as exc:
        raise PayloadError(f"decoded payload is not acceptable XML: {exc}") from None


def clinical_documents(distribution_envelope: etree._Element) -> list[etree._Element]:
    """Every ClinicalDocument carried as the direct content of an ``itk:payload``, in payload order.

    Payloads flagged ``base64``/``compressed`` in their manifest item are decoded first. Raises
    :class:`PayloadError` when a flagged payload cannot be decoded.
    """
    flags = {
        item.get("id"): (_flag(item.get("base64")), _flag(item.get("compressed")))
        for item in _MANIFEST_ITEMS(distribution_envelope)
    }
    documents: list[etree._Element] = []
    for payload in _PAYLOADS(distribution_envelope):
        is_base64, compressed = flags.get(payload.get("id"), (False, False))
        children = [c for c in payload if isinstance(c.tag, str)]
        if is_base64 or compressed:
            root = _decode(payload, compressed) if not children else children[0]
            candidates = [root] if root is not None else []
        else:
            candidates = children
        documents.extend(c for c in candidates if c.tag == CLINICAL_DOCUMENT)
    return documents


def effective_time(document: etree._Element) -> Timestamp:
    """The document's ``effectiveTime/@value``; raises :class:`DocumentTimeError`."""
    values = _EFFECTIVE_TIME(document)
    if not values or not str(values[0]).strip():
        raise DocumentTimeError("ClinicalDocument effectiveTime is missing")
    try:
        return parse_ts(str(values[0]))
    except ValueError as exc:
        raise DocumentTimeError(f"ClinicalDocument effectiveTime is invalid: {exc}") from None


@dataclass(frozen=True)
class Selection:
    document: etree._Element
    index: int
    count: int


def select_document(documents: list[etree._Element]) -> Selection:
    """The document with the latest effectiveTime (compared as instants); the first in order on a tie.

    Raises :class:`DocumentTimeError` when any document's effectiveTime is unusable, ``ValueError`` when the list
    is empty.
    """
    if not documents:
        raise ValueError("no ClinicalDocument")
    moments = [effective_time(d).as_instant() for d in documents]
    best = max(range(len(documents)), key=lambda i: (moments[i], -i))
    return Selection(documents[best], best, len(documents))
