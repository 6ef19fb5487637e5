"""Namespaces of the ITK wire format and the one safe way this project parses untrusted XML.

SOAP 1.1 forbids a document type declaration, so any DOCTYPE is refused outright: no entity is ever declared,
let alone expanded, and nothing is fetched from the network or the file system.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, cast

from lxml import etree

SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
WSA = "http://www.w3.org/2005/08/addressing"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
ITK = "urn:nhs-itk:ns:201005"
HL7 = "urn:hl7-org:v3"
NPFITLC = "NPFIT:HL7:Localisation"

NS = {"soap": SOAP11, "wsa": WSA, "wsse": WSSE, "wsu": WSU, "itk": ITK, "hl7": HL7, "npfitlc": NPFITLC}

ANONYMOUS = "http://www.w3.org/2005/08/addressing/anonymous"


class ElementQuery(Protocol):
    """A compiled XPath that selects elements, called with the context element and any ``$variables``."""

    def __call__(self, element: etree._Element, /, **variables: Any) -> list[etree._Element]: ...


class ValueQuery(Protocol):
    """A compiled XPath that selects attribute values or text."""

    def __call__(self, element: etree._Element, /, **variables: Any) -> list[str]: ...


def xpath(expression: str) -> ElementQuery:
    """Compile a namespace-aware XPath over the envelope namespaces (:data:`NS` prefixes) selecting elements."""
    return cast(ElementQuery, etree.XPath(expression, namespaces=NS))


def first(query: ElementQuery, element: etree._Element) -> etree._Element | None:
    """The first element ``query`` finds below ``element``, or ``None``."""
    found = query(element)
    return found[0] if found else None


def xpath_values(expression: str) -> ValueQuery:
    """Compile a namespace-aware XPath selecting attribute values or text nodes (as strings)."""
    return cast(ValueQuery, etree.XPath(expression, namespaces=NS, smart_strings=False))

# A DOCTYPE can only appear before the root element; in any ASCII-compatible encoding it is visible in the raw
# bytes, which lets us refuse it before the parser sees a single entity declaration.
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)


class XmlRejected(ValueError):
    """The bytes are not an acceptable XML document; ``str(exc)`` is safe to show the sender."""


class TooManyNodes(XmlRejected):
    """The document has more nodes than the caller allows (see :func:`parse_xml`)."""


def _parser(kind: type[etree.XMLParser] = etree.XMLParser, **options: Any) -> etree.XMLParser:
    return kind(
        **options,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        collect_ids=False,
    )


def parse_xml(data: bytes, *, max_nodes: int | None = None) -> etree._Element:
    """Parse untrusted bytes (the XML declaration or BOM decides the encoding) and return the root element.

    With ``max_nodes``, elements, comments and processing instructions are counted while parsing and
    :class:`TooManyNodes` is raised as soon as there are more, before the rest of the tree is built. Nesting is
    limited by libxml2 itself (256 levels; ``huge_tree`` stays off).

    Raises :class:`XmlRejected` for an empty body, a DOCTYPE, or XML that is not well-formed.
    """
    if not data or not data.strip():
        raise XmlRejected("empty request body")
    if _DOCTYPE.search(data, 0, 4096) or b"<!ENTITY" in data[:4096]:
        raise XmlRejected("a document type declaration (DOCTYPE) is not allowed in a SOAP message")
    try:
        root = _parse(data, max_nodes)
    except XmlRejected:
        raise
    except etree.XMLSyntaxError as exc:
        raise XmlRejected(f"not well-formed XML: {exc.msg}") from None
    except ValueError as exc:  # e.g. a Unicode string with an encoding declaration
        raise XmlRejected(f"not well-formed XML: {exc}") from None
    if root is None:
        raise XmlRejected("empty request body")
    # Encodings that hide the DOCTYPE from the byte scan (UTF-16, UTF-32) are caught here.
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XmlRejected("a document type declaration (DOCTYPE) is not allowed in a SOAP message")
    return root


#: Bytes fed to the parser between two node counts: a bomb is stopped within one chunk of its limit.
_FEED_CHUNK = 64 * 1024


def _parse(data: bytes, max_nodes: int | None) -> etree._Element:
    if max_nodes is None:
        return etree.fromstring(data, _parser())
    parser = _parser(etree.XMLPullParser, events=("start", "comment", "pi"))
    nodes = 0
    for offset in range(0, len(data), _FEED_CHUNK):
        parser.feed(data[offset : offset + _FEED_CHUNK])
        nodes += sum(1 for _event in parser.read_events())
        if nodes > max_nodes:
            raise TooManyNodes(
                f"more than {max_nodes} XML nodes (elements, comments and processing instructions), the limit"
            )
    return parser.close()
