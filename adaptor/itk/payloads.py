"""ClinicalDocuments out of an ``itk:DistributionEnvelope``: decode payloads and pick the one to map.

Used by validation (rules D1-D3) and by :func:`adaptor.delivery.conversion.convert`, so both always agree on
which document is the Encounter Report.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass

from lxml import etree

from adaptor.itk.xmlsafe import HL7, TooManyNodes, XmlRejected, parse_xml, xpath, xpath_values
from mappings.hl7 import Timestamp, parse_ts

_MANIFEST_ITEMS = xpath("itk:header/itk:manifest/itk:manifestitem")
_PAYLOADS = xpath("itk:payloads/itk:payload")
_EFFECTIVE_TIME = xpath_values("hl7:effectiveTime/@value")
CLINICAL_DOCUMENT = f"{{{HL7}}}ClinicalDocument"

MIB = 1024 * 1024

# Limits on what one request's payloads may become once decoded. The largest payload of the reference corpus
# decodes to under 0.5 MiB and holds about 2,000 nodes; these leave room for far bigger honest documents while
# keeping the memory a hostile request can claim to a few tens of megabytes. They hold wherever a payload or the
# Pathways attachment is decoded or parsed: validation, conversion, the console and replay.

#: A decoded (and decompressed) payload may not be larger than this.
MAX_DECODED_BYTES = 8 * MIB
#: A compressed payload may not inflate to more than this many times its compressed size...
MAX_INFLATE_RATIO = 100
#: ...once it is larger than this (a small document of repetitive markup compresses very well too).
INFLATE_RATIO_FLOOR = 1 * MIB
#: Nodes (elements, comments and processing instructions) in one payload or attachment.
MAX_NODES = 100_000
#: Nesting depth: libxml2's own limit while ``huge_tree`` is off (see :func:`adaptor.itk.xmlsafe.parse_xml`).
MAX_DEPTH = 256
#: All the payloads of one request together, decoded; and, for a whole request, its nodes.
MAX_REQUEST_DECODED_BYTES = 16 * MIB
MAX_REQUEST_NODES = 2 * MAX_NODES

#: Output inflated at a time, so the limits are checked before more memory is taken.
_INFLATE_CHUNK = 256 * 1024


def max_decoded_bytes(request_bytes: int) -> int:
    """The most that the payloads of a request of ``request_bytes`` can decode to within these limits: base64
    shrinks, and gzip inflates at most :data:`MAX_INFLATE_RATIO` times the compressed bytes beyond the floor."""
    return min(MAX_REQUEST_DECODED_BYTES, max(INFLATE_RATIO_FLOOR, MAX_INFLATE_RATIO * request_bytes))


class PayloadError(ValueError):
    """A payload could not be decoded, gunzipped or parsed (rule D1). ``str(exc)`` is safe to show."""


class PayloadLimitError(PayloadError):
    """A payload or attachment passes one of the limits above; ``str(exc)`` names it."""


class DocumentTimeError(ValueError):
    """A ClinicalDocument's effectiveTime is missing or not an HL7 timestamp (rule D3)."""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "1")


@dataclass
class _Budget:
    """What the payloads of one request may still decode to."""

    decoded_bytes: int
    nodes: int
    compressed_bytes: int = 0  # gzip input seen so far
    inflated_bytes: int = 0  # and what it inflated to

    @classmethod
    def per_request(cls) -> _Budget:
        return cls(MAX_REQUEST_DECODED_BYTES, MAX_REQUEST_NODES)


def _check_size(size: int, budget: _Budget, ratio_limit: int | None = None) -> None:
    """Refuse ``size`` decoded bytes when they pass a limit; the message names the limit."""
    if size > MAX_DECODED_BYTES:
        raise PayloadLimitError(f"decoded payload exceeds the limit of {MAX_DECODED_BYTES} bytes")
    if ratio_limit is not None and size > ratio_limit:
        raise PayloadLimitError(
            f"decompressed payload exceeds the limit of {MAX_INFLATE_RATIO} times its compressed size"
        )
    if size > budget.decoded_bytes:
        raise PayloadLimitError(
            f"the payloads exceed the limit of {MAX_REQUEST_DECODED_BYTES} decoded bytes per request"
        )


def _gunzip(data: bytes, budget: _Budget) -> bytes:
    """One gzip member, inflated a chunk at a time and refused as soon as it passes a limit.

    A truncated stream, and anything after the end of the member (even a second member), is refused.
    """
    # The ratio holds for the request's compressed payloads together, so that many small payloads, each under
    # the floor, cannot add up to more than one could (see max_decoded_bytes).
    budget.compressed_bytes += len(data)
    ratio_limit = max(INFLATE_RATIO_FLOOR, MAX_INFLATE_RATIO * budget.compressed_bytes) - budget.inflated_bytes
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    pending = data
    while not inflater.eof:
        chunk = inflater.decompress(pending, _INFLATE_CHUNK)
        pending = inflater.unconsumed_tail
        if not chunk and not pending:
            break  # all input used and nothing more comes out: the stream ends early
        out += chunk
        _check_size(len(out), budget, ratio_limit)
    if not inflater.eof:
        raise PayloadError("payload is not valid gzip data: the stream is truncated")
    if inflater.unused_data:
        raise PayloadError("payload is not valid gzip data: data follows the end of the gzip stream")
    budget.inflated_bytes += len(out)
    return bytes(out)


def _parse(data: bytes, budget: _Budget, what: str) -> etree._Element:
    """Parse decoded bytes, counting their nodes against the payload's and the request's limits."""
    max_nodes = min(MAX_NODES, budget.nodes)
    try:
        root = parse_xml(data, max_nodes=max_nodes)
    except TooManyNodes:
        if max_nodes < MAX_NODES:
            raise PayloadLimitError(
                f"the payloads exceed the limit of {MAX_REQUEST_NODES} XML nodes per request"
            ) from None
        raise PayloadLimitError(
            f"{what} exceeds the limit of {MAX_NODES} XML nodes (elements, comments and processing instructions)"
        ) from None
    except XmlRejected as exc:
        raise PayloadError(f"{what} is not acceptable XML: {exc}") from None
    budget.nodes -= sum(1 for _node in root.iter())
    return root


def _decode(payload: etree._Element, compressed: bool, budget: _Budget) -> etree._Element | None:
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
            data = _gunzip(data, budget)
        except zlib.error:
            raise PayloadError("payload is not valid gzip data") from None
    _check_size(len(data), budget)
    budget.decoded_bytes -= len(data)
    return _parse(data, budget, "decoded payload")


def check_attachment(data: bytes, *, parse: bool = True) -> None:
    """Hold the decoded bytes of an ``observationMedia/value`` (the Pathways attachment) to a payload's limits:
    their size and, with ``parse``, their nodes (counted while parsing them). Raises
    :class:`PayloadLimitError`, or :class:`PayloadError` when ``parse`` finds them not acceptable XML."""
    budget = _Budget.per_request()
    _check_size(len(data), budget)
    if parse:
        _parse(data, budget, "attachment")


def clinical_documents(distribution_envelope: etree._Element) -> list[etree._Element]:
    """Every ClinicalDocument carried as the direct content of an ``itk:payload``, in payload order.

    Payloads flagged ``base64``/``compressed`` in their manifest item are decoded one at a time, each within
    :data:`MAX_DECODED_BYTES` and :data:`MAX_NODES` and all together within :data:`MAX_REQUEST_DECODED_BYTES`
    and :data:`MAX_REQUEST_NODES`. Raises :class:`PayloadError` when a flagged payload cannot be decoded or
    passes a limit (the message names it).
    """
    flags = {
        item.get("id"): (_flag(item.get("base64")), _flag(item.get("compressed")))
        for item in _MANIFEST_ITEMS(distribution_envelope)
    }
    budget = _Budget.per_request()
    documents: list[etree._Element] = []
    for payload in _PAYLOADS(distribution_envelope):
        is_base64, compressed = flags.get(payload.get("id"), (False, False))
        children = [c for c in payload if isinstance(c.tag, str)]
        if is_base64 or compressed:
            root = _decode(payload, compressed, budget) if not children else children[0]
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
