"""HL7 v3 data types, read once and shared by every resource mapper (mapping.md sections 0 and 4).

Everything here is a pure function of an lxml element: timestamps (TS, with the Europe/London rule), intervals,
names (PN), addresses (AD), telecoms (TEL), codes (CD), the two text functions, section markup and the FHIR
emission rule that drops empty values.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Protocol, cast
from zoneinfo import ZoneInfo

from lxml import etree

HL7 = "urn:hl7-org:v3"
NPFITLC = "NPFIT:HL7:Localisation"
PATHWAYS = "http://nhspathways.org/webservices/pathways/pathwaysCase"
NS = {"hl7": HL7, "npfitlc": NPFITLC, "pw": PATHWAYS}

SNOMED_OID = "2.16.840.1.113883.2.1.3.2.4.15"
LONDON = ZoneInfo("Europe/London")

Element = etree._Element
Json = dict[str, Any]


class ElementQuery(Protocol):
    """A compiled XPath that selects elements, called with the context element and any ``$variables``."""

    def __call__(self, element: Element, /, **variables: Any) -> list[Element]: ...


#: A child step, with at most a position (``hl7:addr[1]``): no other predicates, axes, functions or wildcards.
_CHILD_STEP = r"(?:hl7|npfitlc|pw):[A-Za-z_][\w.-]*(?:\[[1-9][0-9]*\])?"
#: A path of child steps only (``pw:answers/pw:answer``, ``hl7:patientRole[1]/hl7:addr[1]``).
_CHILD_STEPS = re.compile(rf"{_CHILD_STEP}(?:/{_CHILD_STEP})*")


def xpath(expression: str) -> ElementQuery:
    """Compile a namespace-aware XPath (prefixes ``hl7``, ``npfitlc``, ``pw``) that selects elements.

    A path of child steps only is answered by walking the children named at each step (:class:`_ChildSteps`),
    which selects the same elements in the same (document) order without setting up an XPath evaluation, or
    reading an ElementPath, per call: the mappings ask such paths tens of thousands of times per document (the
    Pathways triage lines), where that set-up was most of the cost.
    """
    if _CHILD_STEPS.fullmatch(expression):
        return _ChildSteps(expression)
    return cast(ElementQuery, etree.XPath(expression, namespaces=NS))


class _ChildSteps:
    """A path of child steps as an :class:`ElementQuery`: at each step the children of that name (Clark
    notation), or only the n-th of them for a position (``hl7:addr[1]``: as in XPath, the position counts among
    the parent's children of that name). ``expression`` is the XPath it stands for."""

    __slots__ = ("expression", "steps", "_single")

    def __init__(self, expression: str) -> None:
        self.expression = expression
        steps = []
        for step in expression.split("/"):
            prefix, name = step.split(":")
            name, _, position = name.partition("[")
            steps.append((f"{{{NS[prefix]}}}{name}", int(position[:-1]) if position else None))
        self.steps: tuple[tuple[str, int | None], ...] = tuple(steps)
        #: The tag of a one-step path without a position, the most common kind.
        self._single = steps[0][0] if len(steps) == 1 and steps[0][1] is None else None

    def __call__(self, element: Element, /, **variables: Any) -> list[Element]:
        if self._single is not None:
            return list(element.iterchildren(self._single))
        nodes = [element]
        for tag, position in self.steps:
            # The nodes are in document order and none is an ancestor of another (one depth), so their
            # children, parent by parent, are in document order too.
            found: list[Element] = []
            for node in nodes:
                if position is None:
                    found.extend(node.iterchildren(tag))
                else:
                    nth = next(itertools.islice(node.iterchildren(tag), position - 1, None), None)
                    if nth is not None:
                        found.append(nth)
            nodes = found
        return nodes

    def first(self, element: Element) -> Element | None:
        """The first element the path selects (document order), without finding the others."""
        if self._single is not None:
            return next(element.iterchildren(self._single), None)
        return self._first(element, 0)

    def _first(self, node: Element, depth: int) -> Element | None:
        if depth == len(self.steps):
            return node
        tag, position = self.steps[depth]
        if position is not None:
            nth = next(itertools.islice(node.iterchildren(tag), position - 1, None), None)
            return self._first(nth, depth + 1) if nth is not None else None
        for child in node.iterchildren(tag):
            found = self._first(child, depth + 1)
            if found is not None:
                return found
        return None


class MappingError(ValueError):
    """A document that cannot be mapped. ``element`` names the offending CDA element (an XPath-like path)."""

    def __init__(self, element: str, problem: str) -> None:
        super().__init__(f"{element}: {problem}")
        self.element = element
        self.problem = problem


def path_of(element: Element) -> str:
    """A readable path of ``element`` for error messages, e.g. ``/ClinicalDocument/effectiveTime``."""
    parts = []
    node: Element | None = element
    while node is not None and isinstance(node.tag, str):
        parts.append(etree.QName(node).localname)
        node = node.getparent()
    return "/" + "/".join(reversed(parts))


# -- emission rule -------------------------------------------------------------------------------------------


def compact(value: Any) -> Any:
    """Drop empty and whitespace-only strings, and the objects and arrays they leave empty (recursively).

    Returns ``None`` when nothing is left. Booleans and numbers are kept.
    """
    if isinstance(value, str):
        return value if value and not value.isspace() else None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            # Most leaves are plain strings or None: decided here without a recursive call, because this
            # function runs over every resource of every Bundle.
            if item is None:
                continue
            if item.__class__ is str:
                if item and not item.isspace():
                    out[key] = item
                continue
            item = compact(item)
            if item is not None:
                out[key] = item
        return out or None
    if isinstance(value, (list, tuple)):
        items = []
        for item in value:
            item = compact(item)
            if item is not None:
                items.append(item)
        return items or None
    return value


def ref(resource: Json) -> Json:
    """A FHIR Reference to a resource of this Bundle: ``{"reference": "urn:uuid:<id>"}``."""
    return {"reference": f"urn:uuid:{resource['id']}"}


# -- text ----------------------------------------------------------------------------------------------------


def first_text(element: Element | None) -> str | None:
    """The value of the first child node of ``element`` when that node is text; otherwise ``None``."""
    if element is None:
        return None
    return element.text


def all_text(node: Element | None) -> str:
    """All text of ``node``: child nodes in order, one space before each one after a non-empty result."""
    if node is None or not isinstance(node.tag, str):
        return ""  # comments and processing instructions contribute nothing
    result = ""

    def add(text: str) -> None:
        nonlocal result
        result = f"{result} {text}" if result else text

    if node.text is not None:
        add(node.text)
    for child in node:
        add(all_text(child))
        if child.tail is not None:
            add(child.tail)
    return result


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(text: str) -> str:
    return _escape_text(text).replace('"', "&quot;")


def _attribute_name(element: Element, qname: str) -> str:
    """An attribute name as written: ``prefix:local`` for a namespaced attribute, else ``local``."""
    q = etree.QName(qname)
    if q.namespace is None:
        return q.localname
    prefix = next((p for p, uri in element.nsmap.items() if p and uri == q.namespace), None)
    return f"{prefix}:{q.localname}" if prefix else q.localname


def _serialise(node: Element, out: list[str]) -> None:
    if isinstance(node, etree._Comment):
        out.append(f"<!--{node.text or ''}-->")
    elif isinstance(node.tag, str):
        local = etree.QName(node).localname
        name = f"{node.prefix}:{local}" if node.prefix else local
        parent = node.getparent()
        inherited = parent.nsmap if parent is not None else {}
        attrs = [
            (f"xmlns:{p}" if p else "xmlns", uri)
            for p, uri in node.nsmap.items()
            if inherited.get(p) != uri
        ]
        attrs += sorted((_attribute_name(node, str(k)), str(v)) for k, v in node.attrib.items())
        head = name + "".join(f' {k}="{_escape_attr(v)}"' for k, v in attrs)
        if node.text is None and len(node) == 0:
            out.append(f"<{head}/>")
        else:
            out.append(f"<{head}>")
            _serialise_children(node, out)
            out.append(f"</{name}>")
    if node.tail is not None:
        out.append(_escape_text(node.tail))


def _serialise_children(node: Element, out: list[str]) -> None:
    if node.text is not None:
        out.append(_escape_text(node.text))
    for child in node:
        _serialise(child, out)


def _java_trim(text: str) -> str:
    start, end = 0, len(text)
    while start < end and text[start] <= " ":
        start += 1
    while end > start and text[end - 1] <= " ":
        end -= 1
    return text[start:end]


def markup(text_element: Element | None) -> str:
    """The inner XML of a section's ``hl7:text`` serialised as mapping.md section 4.8 says, trimmed."""
    if text_element is None:
        return ""
    out: list[str] = []
    _serialise_children(text_element, out)
    return _java_trim("".join(out))


def narrative_div(markup_text: str) -> str | None:
    """The XHTML ``div`` carrying escaped markup; ``None`` for empty markup."""
    if not markup_text:
        return None
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{_escape_attr(markup_text)}</div>'


def text_div(text: str | None) -> str | None:
    """An XHTML ``div`` holding plain text, escaped; ``None`` when the text is empty."""
    if text is None or not text.strip():
        return None
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{_escape_text(text)}</div>'


# -- timestamps (TS) -----------------------------------------------------------------------------------------

YEAR, MONTH, DAY, SECOND, MILLISECOND = "year", "month", "day", "second", "millisecond"
_TS = re.compile(r"^(\d{4,})(?:\.(\d+))?(?:(Z)|([+-])(\d{2})(\d{2})?)?$")


@dataclass(frozen=True)
class Timestamp:
    """A parsed HL7 TS. ``instant`` is aware (UTC) for second/millisecond precision; ``day`` is the calendar date
    for year/month/day precision."""

    precision: str
    instant: datetime | None = None
    day: date | None = None

    @property
    def is_date(self) -> bool:
        return self.instant is None

    def as_instant(self) -> datetime:
        """The moment in UTC; a date-only value is midnight UTC of that date."""
        if self.instant is not None:
            return self.instant
        assert self.day is not None
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)


def parse_ts(value: str) -> Timestamp:
    """Parse an HL7 TS ``@value`` (mapping.md section 4.1). Raises ``ValueError`` when it is not a TS."""
    match = _TS.match(value.strip())
    if not match:
        raise ValueError(f"not an HL7 timestamp: {value[:40]!r}")
    digits, fraction, zulu, sign, off_h, off_m = match.groups()
    zone: timezone | ZoneInfo | None = None
    if zulu:
        zone = UTC
    elif sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m or 0))
        zone = timezone(-offset if sign == "-" else offset)
    length = len(digits)
    year = int(digits[0:4])
    month = int(digits[4:6]) if length >= 6 else 1
    day_ = int(digits[6:8]) if length >= 8 else 1
    if length in (4, 6, 8) and fraction is None:
        precision = {4: YEAR, 6: MONTH, 8: DAY}[length]
        # A date-only value keeps day precision, with or without an offset (hardening, section 4.1 rule 4).
        return Timestamp(precision, day=date(year, month, day_))
    hour = int(digits[8:10]) if length >= 10 else 0
    minute = int(digits[10:12]) if length >= 12 else 0
    second = int(digits[12:14]) if length >= 14 else 0
    millis = int((fraction or "")[:3].ljust(3, "0")) if fraction else 0
    local = datetime(year, month, day_, hour, minute, second, millis * 1000)
    aware = local.replace(tzinfo=zone) if zone is not None else local.replace(tzinfo=LONDON)
    return Timestamp(MILLISECOND if fraction else SECOND, instant=aware.astimezone(UTC))


def _utc_text(moment: datetime, millis: bool) -> str:
    moment = moment.astimezone(UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "+00:00"


def format_ts(ts: Timestamp) -> str:
    """A FHIR dateTime at the value's own precision, always in UTC written ``+00:00``."""
    if ts.instant is None:
        assert ts.day is not None
        if ts.precision == YEAR:
            return f"{ts.day.year:04d}"
        if ts.precision == MONTH:
            return f"{ts.day.year:04d}-{ts.day.month:02d}"
        return ts.day.isoformat()
    return _utc_text(ts.instant, millis=ts.precision == MILLISECOND)


def format_instant_ms(ts: Timestamp) -> str:
    """A FHIR instant with milliseconds (MessageHeader.timestamp)."""
    return _utc_text(ts.as_instant(), millis=True)


def format_birth_date(ts: Timestamp) -> str:
    """Patient.birthDate: always ``YYYY-MM-DD``; a value with a time gives the UTC date of the instant."""
    if ts.instant is not None:
        return ts.instant.date().isoformat()
    assert ts.day is not None
    return ts.day.isoformat()


def ts_of(element: Element | None) -> Timestamp | None:
    """The TS in ``element/@value``; ``None`` when the element or its value is absent (nullFlavor only)."""
    if element is None:
        return None
    value = element.get("value")
    if value is None or not value.strip():
        return None
    try:
        return parse_ts(value)
    except ValueError as exc:
        raise MappingError(path_of(element) + "/@value", str(exc)) from None


def datetime_of(element: Element | None) -> str | None:
    """``format_ts`` of ``element/@value``, or ``None``."""
    ts = ts_of(element)
    return format_ts(ts) if ts is not None else None


_LOW = xpath("hl7:low")
_HIGH = xpath("hl7:high")


def period(interval: Element | None) -> Json | None:
    """An IVL_TS (``hl7:low`` / ``hl7:high``) as a FHIR Period; bounds without ``@value`` are omitted."""
    if interval is None:
        return None
    low, high = _LOW(interval), _HIGH(interval)
    return compact(
        {
            "start": datetime_of(low[0]) if low else None,
            "end": datetime_of(high[0]) if high else None,
        }
    )


def parse_xs_datetime(text: str) -> datetime:
    """An xs:dateTime (Pathways ``caseReceiveEnd``) as an aware UTC datetime (mapping.md section 4.3).

    With ``Z`` or an offset: that instant; without a zone: Europe/London local time. Fractions are truncated to
    milliseconds. Raises ``ValueError``.
    """
    match = re.match(
        r"^\s*(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:?\d{2})?\s*$", text
    )
    if not match:
        raise ValueError(f"not an xs:dateTime: {text[:40]!r}")
    y, mo, d, h, mi, s, fraction, zone_text = match.groups()
    millis = int((fraction or "0")[:3].ljust(3, "0"))
    local = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), millis * 1000)
    if zone_text is None:
        return local.replace(tzinfo=LONDON).astimezone(UTC)
    if zone_text == "Z":
        return local.replace(tzinfo=UTC)
    sign = -1 if zone_text[0] == "-" else 1
    hours, minutes = int(zone_text[1:3]), int(zone_text[-2:])
    offset = timezone(sign * timedelta(hours=hours, minutes=minutes))
    return local.replace(tzinfo=offset).astimezone(UTC)


def format_seconds(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss+00:00`` (fraction dropped)."""
    return _utc_text(moment, millis=False)


def format_millis(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.SSS+00:00`` in UTC (Bundle.meta.lastUpdated)."""
    return _utc_text(moment, millis=True)


def format_millis_z(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ss.SSSZ`` in UTC with a literal ``Z`` (Questionnaire.version)."""
    return _utc_text(moment, millis=True).replace("+00:00", "Z")


# -- codes ---------------------------------------------------------------------------------------------------


def coding(code: Element | None) -> Json | None:
    """``{system: @codeSystem, code: @code, display: @displayName}`` (raw OID as system), empties dropped."""
    if code is None:
        return None
    return compact({"system": code.get("codeSystem"), "code": code.get("code"), "display": code.get("displayName")})


def use_tokens(element: Element) -> list[str]:
    """The whitespace-separated tokens of ``@use``."""
    return (element.get("use") or "").split()


# -- addresses (AD) ------------------------------------------------------------------------------------------

_STREET = xpath("hl7:streetAddressLine")
_CITY = xpath("hl7:city[1]")
_POSTCODE = xpath("hl7:postalCode[1]")
_DESC = xpath("hl7:desc[1]")
_COUNTRY = xpath("hl7:country[1]")
_STATE = xpath("hl7:state[1]")
_COUNTY = xpath("hl7:county[1]")
_USEABLE = xpath("hl7:useablePeriod[1]")

_ADDRESS_USE = {"H": "home", "HP": "home", "WP": "work", "TMP": "temp"}


def one(compiled: ElementQuery, element: Element | None) -> Element | None:
    """The first node ``compiled`` finds below ``element``; ``None`` when there is none (or no element)."""
    if element is None:
        return None
    if compiled.__class__ is _ChildSteps:  # the first match, without a list of all of them
        return cast(_ChildSteps, compiled).first(element)
    found = compiled(element)
    return found[0] if found else None


def address(addr: Element | None) -> Json | None:
    """An ``hl7:addr`` as a FHIR Address (mapping.md section 4.5); ``None`` when nothing is left."""
    if addr is None:
        return None
    tokens = use_tokens(addr)
    first = tokens[0] if tokens else None
    useable = one(_USEABLE, addr)
    return compact(
        {
            "use": _ADDRESS_USE.get(first or ""),
            "type": "physical" if first == "PHYS" else None,
            "text": first_text(one(_DESC, addr)),
            "line": [first_text(line) for line in _STREET(addr)],
            "city": first_text(one(_CITY, addr)),
            "district": first_text(one(_COUNTY, addr)),
            "state": first_text(one(_STATE, addr)),
            "postalCode": first_text(one(_POSTCODE, addr)),
            "country": first_text(one(_COUNTRY, addr)),
            "period": period(useable),
        }
    )


# -- telecoms (TEL) ------------------------------------------------------------------------------------------

_TELECOM_USE = {"H": "home", "HV": "home", "MC": "mobile", "WP": "work"}


def telecom(tel: Element | None) -> Json | None:
    """An ``hl7:telecom`` as a FHIR ContactPoint (mapping.md section 4.6)."""
    if tel is None:
        return None
    value = tel.get("value")
    system = None
    if value is not None:
        system = "phone" if value.startswith("tel") else "email" if value.startswith("mailto") else "other"
    tokens = use_tokens(tel)
    return compact(
        {
            "system": system,
            "value": value,
            "use": _TELECOM_USE.get(tokens[0]) if tokens else None,
            "period": period(one(_USEABLE, tel)),
        }
    )


def is_emergency_contact(tel: Element) -> bool:
    """True when any ``@use`` token is ``EC``."""
    return "EC" in use_tokens(tel)


# -- names (PN) ----------------------------------------------------------------------------------------------

_FAMILY = xpath("hl7:family[1]")
_GIVEN = xpath("hl7:given")
_PREFIX = xpath("hl7:prefix")
_SUFFIX = xpath("hl7:suffix")
_VALID_TIME = xpath("hl7:validTime[1]")


def human_name(name: Element | None) -> Json | None:
    """An ``hl7:name`` as a FHIR HumanName (mapping.md section 4.7)."""
    if name is None:
        return None
    if len(name) == 0 and name.text is not None:
        return compact({"text": name.text})  # a text-only name: no use
    parts = compact(
        {
            "family": first_text(one(_FAMILY, name)),
            "given": [first_text(g) for g in _GIVEN(name)],
            "prefix": [first_text(p) for p in _PREFIX(name)],
            "suffix": [first_text(s) for s in _SUFFIX(name)],
            "period": period(one(_VALID_TIME, name)),
        }
    )
    return {"use": "official", **(parts or {})}


def each(compiled: ElementQuery, element: Element | None, convert: Any) -> list[Json]:
    """``convert`` applied to every node ``compiled`` finds below ``element``, empty results dropped."""
    if element is None:
        return []
    return [item for item in (convert(node) for node in compiled(element)) if item]


# -- document body (mapping.md section 0: TOP, NESTED, TE(x)) ------------------------------------------------

#: ``npfitlc:contentId/@root`` of the template identifiers that TE(x) matches.
CONTENT_ID_ROOT = "2.16.840.1.113883.2.1.3.2.4.18.16"

#: TOP: the top-level sections of the structured body (none for a nonXMLBody).
TOP_SECTIONS = xpath("hl7:component/hl7:structuredBody/hl7:component/hl7:section")
#: NESTED: the direct child sections of the top-level sections (not deeper).
NESTED_SECTIONS = xpath(
    "hl7:component/hl7:structuredBody/hl7:component/hl7:section/hl7:component/hl7:section"
)
#: The direct child sections of a section.
CHILD_SECTIONS = xpath("hl7:component/hl7:section")
#: ``TOP/hl7:entry/hl7:encounter``: the top-level encounter entries (including an appointment reference).
TOP_ENCOUNTERS = xpath("hl7:component/hl7:structuredBody/hl7:component/hl7:section/hl7:entry/hl7:encounter")

_TEMPLATE_ENTRIES = xpath(
    "hl7:component/hl7:structuredBody/hl7:component/hl7:section/hl7:entry"
    "[npfitlc:contentId[@root = $root and @extension = $extension]]"
)
_SNOMED_CODE = xpath("hl7:code[@code = $code and @codeSystem = $system]")


def template_entries(document: Element, extension: str) -> list[Element]:
    """TE(x): the top-level ``hl7:entry`` elements whose ``npfitlc:contentId`` names template ``extension``.
    """
    return _TEMPLATE_ENTRIES(document, root=CONTENT_ID_ROOT, extension=extension)


def has_snomed_code(section: Element, code: str) -> bool:
    """True when ``section/hl7:code`` is ``code`` in the SNOMED-OID code system."""
    return bool(_SNOMED_CODE(section, code=code, system=SNOMED_OID))
