"""The CDA sections of a stored request as readable plain text: titles and narrative, nothing else.

The console shows what the sender wrote beside the Bundle made from it. The narrative is CDA markup
(``paragraph``, ``content``, ``br``, ``list``, ``table``...) written by another system: it is turned into plain
lines here and the template escapes them, so no sender markup ever reaches the page as HTML.

A pure function of the stored bytes: the same document the converter maps is found with
:func:`adaptor.delivery.conversion.read_request` (newest ``effectiveTime``), and text is read with the helpers of
:mod:`mappings.hl7`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

from adaptor.delivery.conversion import ConversionError, read_request
from mappings import hl7

_STRUCTURED_SECTIONS = hl7.xpath("hl7:component/hl7:structuredBody/hl7:component/hl7:section")
_CHILD_SECTIONS = hl7.xpath("hl7:component/hl7:section")
_TITLE = hl7.xpath("hl7:title")
_TEXT = hl7.xpath("hl7:text")
_DOCUMENT_TITLE = hl7.xpath("hl7:title")

#: Narrative elements that start a new line (everything else is inline: ``content``, ``sub``, ``sup``...).
_BLOCKS = frozenset({"paragraph", "list", "item", "table", "thead", "tbody", "tfoot", "tr", "caption"})

#: A document with more sections than this is cut (a hostile request should not make a page of megabytes).
MAX_SECTIONS = 200


@dataclass(frozen=True)
class Section:
    """One CDA section: its title, its own narrative as lines, and how deep it is nested (0 = top level)."""

    title: str
    lines: tuple[str, ...]
    depth: int


@dataclass(frozen=True)
class ReadableDocument:
    title: str
    sections: tuple[Section, ...] = ()
    #: Why the document could not be read (a request that failed conversion); ``None`` when it was.
    problem: str | None = None
    notes: tuple[str, ...] = field(default=())


def readable_document(raw: bytes) -> ReadableDocument:
    """The sections of the ClinicalDocument the converter maps from ``raw`` (a stored request)."""
    try:
        document, _fields = read_request(raw)
    except ConversionError as exc:
        return ReadableDocument(title="", problem=str(exc))
    sections: list[Section] = []
    for top in _STRUCTURED_SECTIONS(document):
        _walk(top, 0, sections)
    notes: tuple[str, ...] = ()
    if len(sections) > MAX_SECTIONS:
        notes = (f"only the first {MAX_SECTIONS} of {len(sections)} sections are shown",)
        sections = sections[:MAX_SECTIONS]
    title = _one_line(hl7.all_text(hl7.one(_DOCUMENT_TITLE, document)))
    return ReadableDocument(title=title, sections=tuple(sections), notes=notes)


def _walk(section: etree._Element, depth: int, out: list[Section]) -> None:
    title = _one_line(hl7.all_text(hl7.one(_TITLE, section)))
    lines = narrative_lines(hl7.one(_TEXT, section))
    if title or lines:
        out.append(Section(title=title, lines=lines, depth=depth))
        depth += 1
    # else: a bare container (senders wrap their sections in one); its children are shown a level up.
    if len(out) > MAX_SECTIONS:
        return
    for child in _CHILD_SECTIONS(section):
        _walk(child, depth, out)


def narrative_lines(text: etree._Element | None) -> tuple[str, ...]:
    """The narrative of a section's ``hl7:text`` as lines of plain text, empty lines dropped.

    Block elements and ``br`` break lines, list items start with a bullet, and table rows become their cells
    joined by `` | `` (so a two-column table reads "Question | Answer").
    """
    if text is None:
        return ()
    writer = _LineWriter()
    writer.add_contents(text)
    writer.end_line()
    return tuple(line for line in writer.lines if line and line != "\u2022")


class _LineWriter:
    """Narrative markup, read in document order, written out as lines of plain text."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._current: list[str] = []

    def add_contents(self, node: etree._Element) -> None:
        """The text of ``node`` and of everything inside it."""
        if node.text:
            self._current.append(node.text)
        for child in node:
            self._add(child)

    def end_line(self) -> None:
        line = _one_line(" ".join(self._current))
        if line:
            self.lines.append(line)
        self._current.clear()

    def _add(self, node: etree._Element) -> None:
        if isinstance(node.tag, str):  # comments and processing instructions say nothing (their tails do)
            self._add_element(node, etree.QName(node).localname)
        if node.tail:
            self._current.append(node.tail)

    def _add_element(self, node: etree._Element, name: str) -> None:
        if name == "br":
            self.end_line()
        elif name == "tr":
            self.end_line()
            cells = [_one_line(hl7.all_text(cell)) for cell in node if isinstance(cell.tag, str)]
            self.lines.append(" | ".join(cell for cell in cells if cell))
        elif name in _BLOCKS:
            self.end_line()
            if name == "item":
                self._current.append("\u2022")
            self.add_contents(node)
            self.end_line()
        else:
            self.add_contents(node)


def _one_line(text: str) -> str:
    return " ".join(text.split())
