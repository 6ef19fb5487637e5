"""What identifies a ClinicalDocument, and what a nullification document says (nullification.md).

A 111 sender withdraws a document sent in error with a *nullification* document, whose
``relatedDocument[@typeCode='RPLC']/parentDocument`` names the document withdrawn: its ``id``, ``setId`` and
``versionNumber``. The store finds the withdrawn document among stored messages by those identifiers
(:class:`DocumentKeys`, compared case-insensitively), so every stored message keeps the identifiers of the
document its Bundle is mapped from (:func:`document_keys`); :func:`read_nullification` reads the rest of a
nullification: why (the reason entry, template ``COCD_TP146049UK05#Reason``), who (its author) and when (its
``effectiveTime``).

Reading never raises for a missing optional part; :class:`NullificationUnreadable` says which element a
nullification lacks when it cannot name the document it withdraws.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from lxml import etree

from adaptor.itk.payloads import CLINICAL_DOCUMENT, DocumentTimeError, PayloadError, clinical_documents, select_document
from adaptor.itk.payloads import effective_time as document_time
from adaptor.itk.xmlsafe import ITK, ElementQuery, XmlRejected, first, parse_xml, xpath

#: The code system of the nullification reasons (``02`` "Sent to wrong patient record", ...).
REASON_CODE_SYSTEM = "2.16.840.1.113883.2.1.3.2.4.17.176"
#: The template of the reason entry.
REASON_TEMPLATE = "COCD_TP146049UK05#Reason"
#: The title of the narrative section that holds the reason as text.
REASON_SECTION_TITLE = "Reason for Withdrawal"

_ID = xpath("hl7:id[1]")
_SET_ID = xpath("hl7:setId[1]")
_VERSION = xpath("hl7:versionNumber[1]")
_PARENT = xpath("hl7:relatedDocument[@typeCode = 'RPLC']/hl7:parentDocument[1]")
_ANY_PARENT = xpath("hl7:relatedDocument/hl7:parentDocument[1]")
_REASON = xpath(".//hl7:observation[hl7:templateId[@extension = $template] or hl7:code[@codeSystem = $system]][1]")
_REASON_CODE = xpath("hl7:code[1]")
_ORIGINAL_TEXT_REFERENCE = xpath("hl7:originalText/hl7:reference[1]")
_BY_ID = xpath(".//hl7:*[@ID = $id][1]")
_SECTIONS = xpath(".//hl7:section[hl7:title]")
_TITLE = xpath("hl7:title[1]")
_TEXT = xpath("hl7:text[1]")
_AUTHOR = xpath("hl7:author[1]")
_AUTHOR_ENTITY = xpath("hl7:assignedAuthor[1]")
_PERSON_NAME = xpath("hl7:assignedPerson/hl7:name[1]")
_ORGANISATION = xpath("hl7:representedOrganization[1]")
_NAME = xpath("hl7:name[1]")
_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")  # ASCII digits only, as the ITK rules read integers
_DISTRIBUTION_ENVELOPE = f"{{{ITK}}}DistributionEnvelope"


def identifier_key(element: etree._Element | None) -> str | None:
    """An HL7 II (``root``, optional ``extension``) as the store compares it: upper case, ``ROOT^EXTENSION``;
    ``None`` without a root."""
    if element is None:
        return None
    root = (element.get("root") or "").strip().upper()
    if not root:
        return None
    extension = (element.get("extension") or "").strip().upper()
    return f"{root}^{extension}" if extension else root


def _version(element: etree._Element | None) -> int | None:
    value = element.get("value") if element is not None else None
    return int(value) if value is not None and _INTEGER.match(value) else None


@dataclass(frozen=True)
class DocumentKeys:
    """What identifies a document version: its ``id``, its ``setId`` and ``versionNumber`` (each ``None`` when
    absent), the identifiers as :func:`identifier_key` writes them."""

    document_id: str | None = None
    set_id: str | None = None
    version: int | None = None

    @property
    def any(self) -> bool:
        """Whether there is anything to find the document by (an id, or a setId with a version)."""
        return self.document_id is not None or (self.set_id is not None and self.version is not None)

    def lock_keys(self) -> list[str]:
        """The identifiers a transaction matching this document locks (sorted, so that transactions locking
        several never wait for each other in a cycle)."""
        return sorted({key for key in (self.document_id, self.set_id) if key is not None})


def document_keys(document: etree._Element) -> DocumentKeys:
    """The ``id``, ``setId`` and ``versionNumber`` of a ClinicalDocument (or of a ``parentDocument``)."""
    return DocumentKeys(
        identifier_key(first(_ID, document)),
        identifier_key(first(_SET_ID, document)),
        _version(first(_VERSION, document)),
    )


def document_keys_of_request(raw: bytes) -> DocumentKeys | None:
    """The keys of the document a stored request's Bundle is mapped from (the newest, as validation selects
    it), from the request bytes: for messages stored before the keys were kept. ``None`` when the request
    cannot be read."""
    try:
        root = parse_xml(raw)
        if root.tag == CLINICAL_DOCUMENT:
            return document_keys(root)
        envelope = root if root.tag == _DISTRIBUTION_ENVELOPE else next(root.iter(_DISTRIBUTION_ENVELOPE), None)
        if envelope is None:
            return None
        documents = clinical_documents(envelope)
        return document_keys(select_document(documents).document) if documents else None
    except (XmlRejected, PayloadError, DocumentTimeError, ValueError):
        return None


# -- nullification -------------------------------------------------------------------------------------------


class NullificationUnreadable(ValueError):
    """A nullification that does not say which document it withdraws. ``element`` names what is missing, as
    the sender may be told (the fault of rule E3)."""

    def __init__(self, element: str, problem: str) -> None:
        super().__init__(f"{element}: {problem}")
        self.element = element


@dataclass(frozen=True)
class Nullification:
    """What a nullification document says: which document it withdraws (``withdraws``), why, who and when.

    The reason is the coded entry's ``code`` and ``displayName`` and its text (the narrative its
    ``originalText`` points at, else the "Reason for Withdrawal" section, else the display); ``author`` is the
    author's name and organisation as one line; ``effective_at`` the document's ``effectiveTime``, in UTC.
    """

    document: DocumentKeys
    withdraws: DocumentKeys
    effective_at: datetime
    reason_code: str | None = None
    reason_display: str | None = None
    reason_text: str | None = None
    author: str | None = None

    @property
    def reason(self) -> str:
        return reason_line(self.reason_text, self.reason_display, self.reason_code)


def reason_line(text: str | None, display: str | None, code: str | None) -> str:
    """A nullification's reason as one line for people: the text, else the display, else the code."""
    return text or display or code or "no reason given"


def read_nullification(document: etree._Element) -> Nullification:
    """Read a nullification document. Raises :class:`NullificationUnreadable` when it has no
    ``relatedDocument/parentDocument`` with an ``id`` or a ``setId`` and ``versionNumber``."""
    parent = first(_PARENT, document)
    if parent is None:
        parent = first(_ANY_PARENT, document)
    if parent is None:
        raise NullificationUnreadable(
            "/ClinicalDocument/relatedDocument/parentDocument",
            "missing: a nullification names the document it withdraws",
        )
    withdraws = document_keys(parent)
    if not withdraws.any:
        raise NullificationUnreadable(
            "/ClinicalDocument/relatedDocument/parentDocument/id", "missing (and no setId with a versionNumber)"
        )
    try:
        effective_at = document_time(document).as_instant()
    except DocumentTimeError as exc:
        raise NullificationUnreadable("/ClinicalDocument/effectiveTime", str(exc)) from None
    code, display, text = _reason(document)
    return Nullification(
        document=document_keys(document),
        withdraws=withdraws,
        effective_at=effective_at,
        reason_code=code,
        reason_display=display,
        reason_text=text,
        author=_author(document),
    )


def _first_with(query: ElementQuery, element: etree._Element, **variables: str) -> etree._Element | None:
    found = query(element, **variables)
    return found[0] if found else None


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    text = " ".join("".join(t for t in element.itertext() if isinstance(t, str)).split())
    return text or None


def _reason(document: etree._Element) -> tuple[str | None, str | None, str | None]:
    observation = _first_with(_REASON, document, template=REASON_TEMPLATE, system=REASON_CODE_SYSTEM)
    code = first(_REASON_CODE, observation) if observation is not None else None
    value = (code.get("code") or "").strip() or None if code is not None else None
    display = (code.get("displayName") or "").strip() or None if code is not None else None
    text = None
    reference = first(_ORIGINAL_TEXT_REFERENCE, code) if code is not None else None
    target = (reference.get("value") or "").strip() if reference is not None else ""
    if target.startswith("#") and len(target) > 1:
        text = _text(_first_with(_BY_ID, document, id=target[1:]))
    if text is None:
        for section in _SECTIONS(document):
            if _text(first(_TITLE, section)) == REASON_SECTION_TITLE:
                text = _text(first(_TEXT, section))
                break
    return value, display, text or display


def _author(document: etree._Element) -> str | None:
    """``Dr Steve Fulham, Solihull Hospital (RR109)``: the person's name and the organisation, as far as given."""
    author = first(_AUTHOR, document)
    entity = first(_AUTHOR_ENTITY, author) if author is not None else None
    if entity is None:
        return None
    person = _text(first(_PERSON_NAME, entity))
    organisation = first(_ORGANISATION, entity)
    where = None
    if organisation is not None:
        name = _text(first(_NAME, organisation))
        ods = first(_ID, organisation)
        code = (ods.get("extension") or "").strip() if ods is not None else ""
        where = f"{name} ({code})" if name and code else name or code or None
    parts = [part for part in (person, where) if part]
    return ", ".join(parts) or None
