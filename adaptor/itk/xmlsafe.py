"""Namespaces of the ITK wire format and the one safe way this project parses untrusted XML.

SOAP 1.1 forbids a document type declaration, so any DOCTYPE is refused outright: no entity is ever declared,
let alone expanded, and nothing is fetched from the network or the file system.
"""

from __future__ import annotations

import codecs
import contextlib
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

class XmlRejected(ValueError):
    """The bytes are not an acceptable XML document; ``str(exc)`` is safe to show the sender."""


_DOCTYPE_REFUSED = "a document type declaration (DOCTYPE) is not allowed in a SOAP message"

# A DOCTYPE (and so any entity declaration) can only appear in the prolog, before the root element. It is looked
# for in the first _PROLOG_CHARS characters, read in the document's own encoding, before libxml2 sees a byte:
# libxml2 opens an external subset while it parses, so refusing the DOCTYPE afterwards is too late.
_PROLOG_CHARS = 4096
_MARKUP_DECLARATION = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_ENCODING_DECLARATION = re.compile(r"""<\?xml\s[^>]*?\bencoding\s*=\s*(["'])([A-Za-z][A-Za-z0-9._-]*)\1[^>]*?\?>""")

# How the first bytes of a document say its encoding (XML 1.0 Appendix F): byte order marks first, then the
# patterns of ``<`` or ``<?`` without one; anything else is UTF-8 or an ASCII-compatible encoding. ``None`` is
# a UCS-4 octet order that nothing here reads.
_SIGNATURES: tuple[tuple[bytes, str | None], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xff\xfe", None),
    (b"\xfe\xff\x00\x00", None),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xfe\xff", "utf-16-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\x00\x00\x00\x3c", "utf-32-be"),
    (b"\x3c\x00\x00\x00", "utf-32-le"),
    (b"\x00\x00\x3c\x00", None),
    (b"\x00\x3c\x00\x00", None),
    (b"\x00\x3c\x00\x3f", "utf-16-be"),
    (b"\x3c\x00\x3f\x00", "utf-16-le"),
    (b"\x4c\x6f\xa7\x94", "cp037"),  # EBCDIC ``<?xm``: the declaration names the code page
)
#: Bytes per code unit of the encodings whose declaration cannot change how the document is read.
_WIDE = {"utf-32-be": 4, "utf-32-le": 4, "utf-16-be": 2, "utf-16-le": 2}


def _decode(data: bytes, codec: str) -> str:
    """``data`` decoded with ``codec`` as far as it goes: a character cut off at the end is left out.

    Raises :class:`XmlRejected` when the bytes cannot be read that way at all (a UTF-8 document that declares
    UTF-16 has no byte order mark to start from, and libxml2 refuses it too)."""
    try:
        return codecs.getincrementaldecoder(codec)(errors="replace").decode(data, final=False)
    except UnicodeError:
        raise XmlRejected(f"not well-formed XML: the document cannot be read as {codec}") from None


def _declared_codec(name: str) -> str:
    """The Python text codec for an encoding name from an XML declaration; :class:`XmlRejected` without one."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise XmlRejected(f"not well-formed XML: Unsupported encoding: {name}") from None
    if not getattr(info, "_is_text_encoding", True):  # "base64", "zlib"...: byte transforms, not encodings
        raise XmlRejected(f"not well-formed XML: Unsupported encoding: {name}")
    return info.name


def _prolog_readings(data: bytes) -> list[str]:
    """The start of ``data`` as text, in every way libxml2 could read it: in the encoding its byte order mark or
    first bytes give and, for an 8-bit encoding, also in the one its XML declaration names (from the end of the
    declaration on, where libxml2 switches). Raises :class:`XmlRejected` for an encoding that cannot be read."""
    family = next((codec for signature, codec in _SIGNATURES if data.startswith(signature)), "ascii")
    if family is None:
        raise XmlRejected("not well-formed XML: Unsupported encoding: UCS-4 in an unusual octet order")
    if family in _WIDE:
        return [_decode(data[: _PROLOG_CHARS * _WIDE[family]], family)]
    # One byte is one character in both 8-bit readings, so offsets in the text are offsets in the bytes.
    start = 3 if family == "utf-8" else 0
    window = data[start : start + _PROLOG_CHARS]  # as many bytes as before the scan knew encodings
    text = window.decode("cp037" if family == "cp037" else "latin-1")
    readings = [text]
    declaration = _ENCODING_DECLARATION.match(text)
    if declaration is not None:
        readings.append(_decode(window[declaration.end() :], _declared_codec(declaration.group(2))))
    return readings


class _RefuseExternal(etree.Resolver):
    """Answers every request for an external resource (DTD subset, external entity, XInclude) with an empty
    document, so that libxml2 never opens a file, a FIFO or a socket named in a document."""

    def resolve(self, system_url: str, public_id: str, context: object) -> Any:  # type: ignore[override]  # stubs lack context
        # Not resolve_empty(): lxml hands that on to libxml2's default loader, which opens the URL after all.
        return self.resolve_string("", context, base_url=None)


_REFUSE_EXTERNAL = _RefuseExternal()


class TooManyNodes(XmlRejected):
    """The document has more nodes than the caller allows (see :func:`parse_xml`)."""


def _parser(kind: type[etree.XMLParser] = etree.XMLParser, **options: Any) -> etree.XMLParser:
    parser = kind(
        **options,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
        collect_ids=False,
    )
    parser.resolvers.add(_REFUSE_EXTERNAL)
    return parser


def parse_xml(data: bytes, *, max_nodes: int | None = None) -> etree._Element:
    """Parse untrusted bytes (the XML declaration or BOM decides the encoding) and return the root element.

    With ``max_nodes``, elements, comments and processing instructions are counted while parsing and
    :class:`TooManyNodes` is raised as soon as there are more, before the rest of the tree is built (data too
    short to hold more, :data:`MIN_NODE_BYTES` per node, is parsed without counting). Nesting is limited by
    libxml2 itself (256 levels; ``huge_tree`` stays off).

    Raises :class:`XmlRejected` for an empty body, a DOCTYPE, an encoding that cannot be read, or XML that is
    not well-formed. Nothing named in the document is ever opened: no DTD, entity, XInclude or schema.
    """
    if not data or not data.strip():
        raise XmlRejected("empty request body")
    if any(_MARKUP_DECLARATION.search(text) for text in _prolog_readings(data)):
        raise XmlRejected(_DOCTYPE_REFUSED)
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
    # A DOCTYPE after the first _PROLOG_CHARS (a long prolog) is refused here; the resolver kept it from
    # reaching outside the document meanwhile.
    docinfo: Any = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise XmlRejected(_DOCTYPE_REFUSED)
    return root


#: Bytes fed to the parser between two node counts: a bomb is stopped within one chunk of its limit.
_FEED_CHUNK = 64 * 1024


#: The fewest bytes a counted node takes (``<a>``; a comment ``<!---->`` takes 7, a processing instruction
#: ``<?a?>`` 5, whatever the encoding): data at most this many times the limit long cannot pass it.
MIN_NODE_BYTES = 3


def _parse(data: bytes, max_nodes: int | None) -> etree._Element:
    if max_nodes is None or len(data) <= MIN_NODE_BYTES * max_nodes:  # no need to count
        return etree.fromstring(data, _parser())
    parser = _parser(etree.XMLPullParser, events=("start", "comment", "pi"))
    nodes = 0
    try:
        for offset in range(0, len(data), _FEED_CHUNK):
            parser.feed(data[offset : offset + _FEED_CHUNK])
            nodes += sum(1 for _event in parser.read_events())
            if nodes > max_nodes:
                raise TooManyNodes(
                    f"more than {max_nodes} XML nodes (elements, comments and processing instructions), the limit"
                )
    except BaseException:
        # The pull parser sits in a reference cycle with its events: closing it now frees the partial tree (up
        # to max_nodes elements) at once instead of at the next run of the cyclic garbage collector.
        with contextlib.suppress(etree.XMLSyntaxError):
            parser.close()
        raise
    return parser.close()
