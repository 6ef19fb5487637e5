"""QuestionnaireResponse and Questionnaire pairs from the embedded NHS Pathways case (mapping.md 3.18).

The Pathways triage travels as a base64 ``pw:PathwaysCase`` document in the first ObservationMedia entry.
It is optional evidence: whatever goes wrong while reading it (no entry, bad base64, bad XML, unexpected
structure), the report is still delivered, just without triage pairs.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Any

from lxml import etree

from . import hl7
from .context import UNREAD, MappingContext
from .hl7 import Element, Json

_MEDIA_VALUE = hl7.xpath("hl7:observationMedia/hl7:value")

_PATHWAYS_CASE = f"{{{hl7.PATHWAYS}}}PathwaysCase"
_CASE_RECEIVE_END = hl7.xpath("pw:caseReceiveEnd")
_CASE_ID = hl7.xpath("pw:caseDetails/pw:caseId")
_COUNTRY_NAME = hl7.xpath("pw:caseDetails/pw:address/pw:country/pw:name")
_CALLER_PHONE = hl7.xpath("pw:caseDetails/pw:contactDetails/pw:caller[1]/pw:phone/pw:number")
_TRIAGES = hl7.xpath("pw:pathwayDetails/pw:pathwayTriageDetails/pw:pathwayTriage")

_USER_ID = hl7.xpath("pw:user/pw:id")
_USER_NAME = hl7.xpath("pw:user/pw:name")
_USER_SKILL_SET = hl7.xpath("pw:user/pw:skillSet")
#: Skill sets named in the publisher; any other value (e.g. ``T6``, empty) is published as ``Unknown``.
_KNOWN_SKILL_SETS = frozenset({"T1", "T2", "T3", "T4"})

_TRIAGE_LINES = hl7.xpath("pw:triageLineDetails/pw:triageLine")
_QUESTION = hl7.xpath("pw:question")
_QUESTION_ID = hl7.xpath("pw:questionId")
_QUESTION_TEXT = hl7.xpath("pw:questionText")
_ORDER_NO = hl7.xpath("pw:triageLogicId/pw:pathwayOrderNo")
_ANSWERS = hl7.xpath("pw:answers/pw:answer")
_ANSWER_TEXT = hl7.xpath("pw:text")

NOT_AVAILABLE = "N/A"

_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=]")
_DOCTYPE = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)

#: Nodes (elements, comments, processing instructions) a case may hold, counted while parsing: the payload
#: limit of ``adaptor.itk.payloads.MAX_NODES`` (mappings imports nothing from adaptor; a test keeps them equal).
MAX_CASE_NODES = 100_000
#: The fewest bytes a counted node takes (``<a>``; a comment ``<!---->`` takes 7, a processing instruction
#: ``<?a?>`` 5): data this many times the limit long or shorter cannot pass it, and is parsed without counting.
MIN_NODE_BYTES = 3
_FEED_CHUNK = 64 * 1024


def read_pathways_case(document: Element) -> Element | None:
    """The ``pw:PathwaysCase`` carried by the first ObservationMedia entry; ``None`` when there is none or it
    cannot be read (bad base64, not UTF-8, not well-formed, a DTD, another root element)."""
    encoded = attachment_text(document)
    data = attachment_bytes(encoded) if encoded is not None else None
    return parse_case(data) if data is not None else None


def attachment_text(document: Element) -> str | None:
    """The base64 text of the first ObservationMedia entry's ``value``; ``None`` when there is none."""
    entries = hl7.template_entries(document, "COCD_TP146002GB01#ObservationMedia")
    value = hl7.one(_MEDIA_VALUE, entries[0]) if entries else None
    return hl7.first_text(value)


def attachment_bytes(text: str) -> bytes | None:
    """Decode like a MIME base64 decoder: characters outside the alphabet are skipped, ``=`` ends the data and
    padding is optional. ``None`` when the remaining characters cannot be base64."""
    alphabet_only = _NOT_BASE64.sub("", text).split("=", 1)[0]
    if len(alphabet_only) % 4 == 1:
        return None
    try:
        return base64.b64decode(alphabet_only + "=" * (-len(alphabet_only) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def parse_case(data: bytes) -> Element | None:
    """The ``pw:PathwaysCase`` in decoded attachment bytes; ``None`` when they are not UTF-8, name a DTD or an
    entity, are not well-formed, pass :data:`MAX_CASE_NODES` or hold another root element.

    The adaptor's rule D6 reads the case with this function before schema-validating it, and hands the result
    to the mapping (:attr:`MappingContext.pathways_case`): what D6 says of the case is what the mapping sees.
    """
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _DOCTYPE.search(data):
        return None  # the case never needs a DTD; refusing one rules out entity expansion entirely
    case = _parse_bounded(data)
    return case if case is not None and case.tag == _PATHWAYS_CASE else None


def _parse_bounded(data: bytes) -> Element | None:
    """The root element, or ``None`` when ``data`` is not well-formed or passes :data:`MAX_CASE_NODES`."""
    # Read as the UTF-8 just checked, whatever its first bytes or declaration say: the byte scan above is then
    # exact, and no DOCTYPE in UTF-16 or UTF-32 can make libxml2 open a file it names.
    options: dict[str, Any] = {
        "resolve_entities": False,
        "no_network": True,
        "load_dtd": False,
        "huge_tree": False,
        "encoding": "utf-8",
    }
    try:
        if len(data) <= MIN_NODE_BYTES * MAX_CASE_NODES:  # cannot hold too many nodes: no need to count them
            return etree.fromstring(data, etree.XMLParser(**options))
        parser = etree.XMLPullParser(events=("start", "comment", "pi"), **options)
        nodes = 0
        for offset in range(0, len(data), _FEED_CHUNK):
            parser.feed(data[offset : offset + _FEED_CHUNK])
            nodes += sum(1 for _event in parser.read_events())
            if nodes > MAX_CASE_NODES:
                return None
        return parser.close()
    except (etree.XMLSyntaxError, ValueError):
        return None


def is_selected(answer: Element) -> bool:
    """``pw:answer/@selected`` read case-insensitively (mapping.md 4.4); a missing attribute is false."""
    return (answer.get("selected") or "").strip().lower() in ("true", "1")


def _text(compiled: hl7.ElementQuery, element: Element) -> str | None:
    return hl7.first_text(hl7.one(compiled, element))


def _case_receive_end(case: Element) -> datetime | None:
    """``caseReceiveEnd`` (mapping.md 4.3); an empty element counts as absent. Raises ``ValueError``."""
    text = _text(_CASE_RECEIVE_END, case)
    if text is None or not text.strip():
        return None
    return hl7.parse_xs_datetime(text)


def _publisher(triage: Element) -> str:
    """``User ID: '…' User name: '…' User skill set: '…'`` from the triage's ``pw:user``; parts whose element
    is absent are left out, and ``N/A`` when all three are."""
    parts = []
    user_id = hl7.one(_USER_ID, triage)
    if user_id is not None:
        parts.append(f"User ID: '{hl7.first_text(user_id) or ''}' ")
    user_name = hl7.one(_USER_NAME, triage)
    if user_name is not None:
        parts.append(f"User name: '{hl7.first_text(user_name) or ''}' ")
    skill_set = hl7.one(_USER_SKILL_SET, triage)
    if skill_set is not None:
        skill = hl7.first_text(skill_set)
        skill = skill if skill in _KNOWN_SKILL_SETS else "Unknown"
        parts.append(f"User skill set: '{skill}'")
    return "".join(parts) or NOT_AVAILABLE


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def _answers(question: Element) -> list[tuple[str | None, bool]]:
    """Each offered answer of ``question`` as (text, selected), in order: read once, used by both resources."""
    return [(_text(_ANSWER_TEXT, answer), is_selected(answer)) for answer in _ANSWERS(question)]


def _response_item(question: Element, answers: list[tuple[str | None, bool]]) -> Json:
    """QuestionnaireResponse.item: the question and the text of the last selected, non-blank answer."""
    question_id = _text(_QUESTION_ID, question)
    chosen = [text for text, selected in answers if selected and not _blank(text)]
    return {
        "linkId": NOT_AVAILABLE if _blank(question_id) else question_id,
        "text": _text(_QUESTION_TEXT, question),
        "answer": [{"valueString": chosen[-1]}] if chosen else None,
    }


def _questionnaire_item(question: Element, answers: list[tuple[str | None, bool]], case_id: str | None) -> Json:
    """Questionnaire.item: the question with every offered answer and whether it was selected."""
    question_text = hl7.one(_QUESTION_TEXT, question)
    return {
        "linkId": NOT_AVAILABLE if _blank(case_id) else case_id,
        "prefix": _text(_ORDER_NO, question),
        # Only a missing questionText reads N/A; an empty one gives no text.
        "text": NOT_AVAILABLE if question_text is None else hl7.first_text(question_text),
        "type": "choice",
        "required": True,
        "repeats": False,
        "option": [
            {"valueString": f"{text or ''}, Selected: {'true' if selected else 'false'}"} for text, selected in answers
        ],
    }


def _case_facts(case: Element, end: datetime | None) -> Json:
    """The Questionnaire elements every line of the case shares (all but ``publisher`` and ``item``)."""
    phone = _text(_CALLER_PHONE, case)
    return {
        "identifier": [{"value": _text(_CASE_ID, case)}],
        "version": hl7.format_millis_z(end) if end else None,
        "status": "active",
        "experimental": False,
        "date": hl7.format_seconds(end) if end else None,
        "lastReviewDate": end.date().isoformat() if end else None,
        "jurisdiction": [{"text": _text(_COUNTRY_NAME, case)}],
        "contact": None if _blank(phone) else [{"telecom": [{"system": "phone", "value": phone}]}],
        "subjectType": ["Patient"],
    }


def map_triage(ctx: MappingContext, subject: Json | None, encounter: Json) -> list[tuple[Json, Json]]:
    """One (QuestionnaireResponse, Questionnaire) pair per triage line of every ``pw:pathwayTriage``, in
    document order. ``[]`` when the document carries no readable Pathways case."""
    case = read_pathways_case(ctx.document) if ctx.pathways_case is UNREAD else ctx.pathways_case
    if case is None:
        return []
    try:
        end = _case_receive_end(case)
    except ValueError:
        return []
    triages = _TRIAGES(case)
    if not triages:
        return []

    case_id = _text(_CASE_ID, case)
    # The case-level facts are the same on every Questionnaire: apply the emission rule to them once.
    shared = hl7.compact(_case_facts(case, end)) or {}
    authored = shared.get("date")
    response_shared = hl7.compact(
        {
            "identifier": {"value": case_id},
            "status": "completed",
            "subject": hl7.ref(subject) if subject else None,
            "context": hl7.ref(encounter),
            "authored": authored,
        }
    ) or {}
    pairs = []
    for triage in triages:
        publisher = _publisher(triage)
        for line in _TRIAGE_LINES(triage):
            question = hl7.one(_QUESTION, line)
            questionnaire = {**ctx.new_resource("Questionnaire"), **shared, "publisher": publisher}
            response = {
                **ctx.new_resource("QuestionnaireResponse"),
                "questionnaire": hl7.ref(questionnaire),
                **response_shared,
            }
            if question is not None:
                answers = _answers(question)
                questionnaire_item = hl7.compact(_questionnaire_item(question, answers, case_id))
                response_item = hl7.compact(_response_item(question, answers))
                if questionnaire_item:
                    questionnaire["item"] = [questionnaire_item]
                if response_item:
                    response["item"] = [response_item]
            pairs.append((response, questionnaire))
    return pairs
