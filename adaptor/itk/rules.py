"""ITK request validation: wire-contract.md section 4, rules A1 to D6, evaluated in table order.

:func:`parse_request` applies A1 and A2 to the raw bytes; :func:`validate_request` applies A3 to D6 to the
parsed envelope and returns the :class:`~adaptor.itk.message.ItkMessage` that later stages work on. The first
failing rule raises :class:`~adaptor.itk.faults.ItkFault` with the rule's faultcode, ErrorCode and texts, and with
``relates_to`` set to the request's wsa:MessageID whenever it could be read; no other exception escapes.

Every lookup is namespace-aware and relative to the element it belongs to (``soap:Header/wsa:To``, never "the
first ``To`` anywhere"), and every ``itk:address``, ``itk:id`` and ``itk:spec`` is considered, in any order.

Profiles (section 4): *core* rules always run; *strict* rules (B5-B12, B14) run only with
``PEM111_SOAP_VALIDATION_ENABLED``; *config* rules (B6, B13, C14, C17) only when their list is configured.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

from lxml import etree

from adaptor.config import Settings
from adaptor.itk import schemas
from adaptor.itk.allowlist import AllowList, dos_id, ods_code
from adaptor.itk.faults import SOAP_VALIDATION_FAILED, FaultCode, ItkFault, internal, invalid, log_internal_error
from adaptor.itk.message import Address, ItkMessage, PathwaysCase
from adaptor.itk.payloads import (
    MAX_REQUEST_NODES,
    DocumentTimeError,
    PayloadError,
    PayloadLimitError,
    check_attachment,
    clinical_documents,
    select_document,
)
from adaptor.itk.wire import (
    INTERACTION_KEY,
    NULLIFICATION,
    event_of,
    interaction_name,
    is_nullification,
    sender_ods,
)
from adaptor.itk.xmlsafe import ANONYMOUS, SOAP11, WSA, WSSE, ElementQuery, XmlRejected, first, parse_xml, xpath
from mappings import questionnaire
from mappings.context import UNREAD

log = logging.getLogger("adaptor.itk")

ACK_REQUESTED_KEY = "urn:nhs-itk:ns:201005:ackrequested"
INF_ACK_REQUESTED_KEY = "urn:nhs-itk:ns:201005:infackrequested"

#: Offending values quoted in ErrorText (``<v>`` in the rule table) are cut to this length.
MAX_QUOTED_VALUE = 200
#: wsa:MessageID is a UUID, sometimes prefixed; anything this long is not one.
MAX_MESSAGE_ID_LENGTH = 255


def _text(element: etree._Element | None) -> str:
    """The element's text content, trimmed; ``""`` for a missing element."""
    if element is None:
        return ""
    return "".join(text for text in element.itertext() if isinstance(text, str)).strip()


def _quote(value: str) -> str:
    """An offending value as quoted in ErrorText: at most :data:`MAX_QUOTED_VALUE` characters."""
    return value[:MAX_QUOTED_VALUE]


def _is_true(value: str | None) -> bool:
    """xs:boolean true (``true`` / ``1``); case-insensitive because senders write ``True``."""
    return (value or "").strip().lower() in ("true", "1")


# == A1-A2: the raw request ==================================================================================


def too_large(settings: Settings, size: int | None = None) -> ItkFault:
    """Rule A1: a body over ``settings.max_request_bytes`` (the HTTP layer may raise it before reading)."""
    actual = f"{size} bytes" if size is not None else "the request"
    return invalid(
        "A1", "Message too large", f"{actual} exceeds the maximum of {settings.max_request_bytes} bytes"
    )


def parse_request(raw: bytes, settings: Settings) -> etree._Element:
    """Apply rules A1 (size) and A2 (well-formed XML without DOCTYPE) and return the root element.

    Raises :class:`ItkFault` (1000) for an oversized, empty, malformed or DOCTYPE-carrying body, and for one
    with more nodes than :data:`~adaptor.itk.payloads.MAX_REQUEST_NODES` (counted while parsing).
    """
    if len(raw) > settings.max_request_bytes:
        raise too_large(settings, len(raw))
    try:
        return parse_xml(raw, max_nodes=MAX_REQUEST_NODES)
    except XmlRejected as exc:
        raise invalid("A2", "This is not a valid XML message", str(exc)) from None


# == A3-A5: the SOAP envelope ================================================================================

_ENVELOPE = f"{{{SOAP11}}}Envelope"
_HEADER = xpath("soap:Header")
_BODY = xpath("soap:Body")
_MUST_UNDERSTAND = f"{{{SOAP11}}}mustUnderstand"

#: Header blocks this receiver understands (wire-contract.md section 2): mustUnderstand on them is accepted.
UNDERSTOOD_HEADERS = frozenset(
    {f"{{{WSA}}}{name}" for name in ("MessageID", "Action", "To", "ReplyTo", "From", "FaultTo", "RelatesTo")}
    | {f"{{{WSSE}}}Security"}
)


@dataclass(frozen=True)
class _Soap:
    envelope: etree._Element
    header: etree._Element | None
    body: etree._Element


def _request_message_id(root: etree._Element) -> str | None:
    """The wsa:MessageID in the envelope's own Header (any envelope namespace, so that even the fault for a
    SOAP 1.2 request can carry RelatesTo); ``None`` when absent or empty. Never raises."""
    if not isinstance(root.tag, str) or etree.QName(root).localname != "Envelope":
        return None
    header_tag = etree.QName(etree.QName(root).namespace, "Header").text
    for header in root:
        if header.tag == header_tag:
            return _text(header.find(f"{{{WSA}}}MessageID")) or None
    return None


def _check_envelope(root: etree._Element) -> _Soap:
    """A3 (SOAP version) and A4 (a SOAP 1.1 Envelope with a Body)."""
    qname = etree.QName(root) if isinstance(root.tag, str) else None
    if qname is not None and qname.localname == "Envelope" and qname.namespace not in (None, SOAP11):
        raise ItkFault(
            1000,
            "SOAP version mismatch",
            f"Envelope namespace {_quote(qname.namespace or '')}: only SOAP 1.1 ({SOAP11}) is accepted",
            faultcode=FaultCode.VERSION_MISMATCH,
            rule="A3",
        )
    body = first(_BODY, root) if root.tag == _ENVELOPE else None
    if body is None:
        raise invalid("A4", "DistributionEnvelope missing")
    return _Soap(root, first(_HEADER, root), body)


def _check_must_understand(soap: _Soap) -> None:
    """A5: a header block we do not understand, marked soap:mustUnderstand="1"."""
    if soap.header is None:
        return
    for block in soap.header:
        if not isinstance(block.tag, str) or block.tag in UNDERSTOOD_HEADERS:
            continue
        if (block.get(_MUST_UNDERSTAND) or "").strip().lower() in ("1", "true"):
            raise ItkFault(
                1000,
                "Rejecting foreign header",
                _quote(block.tag),
                faultcode=FaultCode.MUST_UNDERSTAND,
                rule="A5",
            )


# == B1-B14: WS-Addressing and WS-Security ===================================================================

_MESSAGE_ID = xpath("wsa:MessageID")
_ACTION = xpath("wsa:Action")
_TO = xpath("wsa:To")
_REPLY_TO_ADDRESS = xpath("wsa:ReplyTo/wsa:Address")
_SECURITY = xpath("wsse:Security")
_TIMESTAMP = xpath("wsu:Timestamp")  # in wsse:Security
_CREATED = xpath("wsu:Created")  # in wsu:Timestamp
_EXPIRES = xpath("wsu:Expires")
_USERNAME = xpath("wsse:UsernameToken/wsse:Username")  # in wsse:Security

_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_UUID = re.compile(r"^(?:uuid:|urn:uuid:)?[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
_XS_DATETIME = re.compile(  # ASCII digits only (\d would accept any Unicode digit)
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?$", re.ASCII
)
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _header_child(soap: _Soap, compiled: ElementQuery) -> etree._Element | None:
    return first(compiled, soap.header) if soap.header is not None else None


def _check_addressing(soap: _Soap, settings: Settings) -> tuple[str, str]:
    """B1-B6: MessageID, Action, To and ReplyTo. Returns (MessageID, Action), both trimmed."""
    message_id = _text(_header_child(soap, _MESSAGE_ID))
    if not message_id:
        raise invalid("B1", "MessageId missing")
    if len(message_id) > MAX_MESSAGE_ID_LENGTH:
        # Identifiers are indexed by the store (PostgreSQL cannot index a value of a few KB): a sender must hear
        # at once that such a message can never be accepted, not get a retryable fault on every resend.
        raise invalid("B1", "Invalid MessageId: longer than 255 characters")
    if not _UUID.match(message_id):
        log.info("wsa:MessageID is not a UUID (accepted)", extra={"message_id": _quote(message_id)})
    action = _text(_header_child(soap, _ACTION))
    if not action:
        raise invalid("B2", "Action node missing")
    to = _text(_header_child(soap, _TO))
    if to and not _URI_SCHEME.match(to):
        raise invalid("B3", f"Invalid Send To value: {_quote(to)}")
    reply_to = _text(_header_child(soap, _REPLY_TO_ADDRESS))
    if reply_to and reply_to != ANONYMOUS:
        raise invalid("B4", f"Invalid ReplyTo: {_quote(reply_to)}")
    if settings.soap_validation_enabled:
        if not to:  # an empty wsa:To tells the receiver no more than a missing one
            raise invalid("B5", "Send To missing")
        expected = {_comparable_url(url) for url in settings.soap_send_to}
        if expected and _comparable_url(to) not in expected:
            raise invalid("B6", f"Invalid Send To value: {_quote(to)}")
    return message_id, action


def _comparable_url(url: str) -> tuple[str, ...]:
    """``url`` normalised: the case of scheme and host, a default port and a trailing slash do not count."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # e.g. a non-numeric port: compare the text as it is
        return (url,)
    scheme = parts.scheme.lower()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    return (scheme, (parts.hostname or "").lower(), str(port), parts.path.rstrip("/"), parts.query)


def _parse_xs_datetime(text: str) -> datetime | None:
    """A WS-Security timestamp (``YYYY-MM-DDThh:mm:ss[.f][Z|±hh:mm]``) as aware UTC; no zone means UTC."""
    match = _XS_DATETIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    try:
        microsecond = int((fraction or "0")[:6].ljust(6, "0"))
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), microsecond)
        if zone is None or zone == "Z":
            return moment.replace(tzinfo=UTC)
        sign = -1 if zone[0] == "-" else 1
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        return moment.replace(tzinfo=timezone(sign * offset)).astimezone(UTC)
    except ValueError:  # month 13, hour 25, offset beyond a day...
        return None


def _check_security(soap: _Soap, settings: Settings, now: datetime) -> str | None:
    """B7-B13: WS-Security Timestamp and Username. Returns the Username (trimmed) or ``None``."""
    security = _header_child(soap, _SECURITY)
    username_element = first(_USERNAME, security) if security is not None else None
    username = _text(username_element) or None
    if settings.soap_validation_enabled:
        timestamp = first(_TIMESTAMP, security) if security is not None else None
        if timestamp is None:
            raise invalid("B7", "Timestamp missing")
        created = _parse_xs_datetime(_text(first(_CREATED, timestamp)))
        expires = _parse_xs_datetime(_text(first(_EXPIRES, timestamp)))
        if created is None or expires is None:
            raise invalid("B8", "Invalid timestamp")
        if created >= expires:
            raise invalid("B9", "Invalid timestamp")
        skew = timedelta(seconds=settings.timestamp_skew_seconds)
        if expires <= now - skew:
            raise invalid("B10", "Timestamp expired", f"wsu:Expires {expires.isoformat()} has passed")
        if created > now + skew:
            raise invalid("B11", "Timestamp not yet valid", f"wsu:Created {created.isoformat()} is ahead")
        if username is None:
            raise ItkFault(3000, "Username missing", SOAP_VALIDATION_FAILED, rule="B12")
    _check_username_lists(username, settings)
    return username


def _check_username_lists(username: str | None, settings: Settings) -> None:
    """B13. Usernames are free text (not authentication): compared trimmed and case-insensitively."""
    if not (settings.username_deny_list or settings.username_allow_list):
        return
    name = (username or "").casefold()
    denied = {u.strip().casefold() for u in settings.username_deny_list}
    allowed = {u.strip().casefold() for u in settings.username_allow_list}
    if name in denied or (allowed and name not in allowed):
        raise ItkFault(
            3000,
            "Username not authorised",
            f"wsse:Username {_quote(username or '(none)')} is not authorised to send to this service",
            rule="B13",
        )


def _blank_attribute(scope: etree._Element) -> str | None:
    """B14: the path of the first blank attribute value in ``scope`` (itself included), else ``None``."""
    for element in scope.iter(etree.Element):
        for name, value in element.attrib.items():
            if not value.strip():
                return f"{_path(element, scope)}/@{etree.QName(name).localname}"
    return None


def _path(element: etree._Element, scope: etree._Element) -> str:
    """A readable path from ``scope`` down to ``element``: local names, ``[n]`` where a name repeats."""
    steps = []
    node: etree._Element | None = element
    while node is not None:
        step = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None and node is not scope:
            namesakes = [s for s in parent if s.tag == node.tag]
            if len(namesakes) > 1:
                step += f"[{namesakes.index(node) + 1}]"
        steps.append(step)
        if node is scope:
            break
        node = parent
    return "/".join(reversed(steps))


# == C1-C18: the Distribution Envelope =======================================================================

_DISTRIBUTION_ENVELOPE = xpath("itk:DistributionEnvelope")  # in soap:Body
_ITK_HEADER = xpath("itk:header")  # the rest are relative to the DistributionEnvelope
_MANIFEST = xpath("itk:header/itk:manifest")
_MANIFEST_ITEMS = xpath("itk:header/itk:manifest/itk:manifestitem")
_PAYLOAD_LIST = xpath("itk:payloads")
_PAYLOAD_ITEMS = xpath("itk:payloads/itk:payload")
_ADDRESS_LIST = xpath("itk:header/itk:addresslist")
_ADDRESSES = xpath("itk:address")  # in itk:addresslist
_AUDIT_IDENTITY = xpath("itk:header/itk:auditIdentity")
_AUDIT_IDS = xpath("itk:id")  # in itk:auditIdentity
_SENDER_ADDRESS = xpath("itk:header/itk:senderAddress")
_SPECS = xpath("itk:header/itk:handlingSpecification/itk:spec")
_INTEGER = re.compile(r"^\s*[+-]?[0-9]+\s*$")  # xs:integer; int() and \d would also take "1_0" and "١"


@dataclass(frozen=True)
class _Envelope:
    """What C2-C16 read from the DistributionEnvelope."""

    tracking_id: str
    service: str
    interaction: str
    event: str
    addresses: tuple[Address, ...] | None  # None: no itk:addresslist
    sender: str
    sender_address: str | None
    ack_requested: bool
    inf_ack_requested: bool
    warnings: tuple[str, ...] = ()


def _count(element: etree._Element | None) -> int | None:
    value = element.get("count") if element is not None else None
    return int(value) if value is not None and _INTEGER.match(value) else None


def _service_matches(action: str, service: str) -> bool:
    """C3 with the short-name tolerance of section 3: equal, or one is the other's last ``:``-segments."""
    return action == service or action.endswith(":" + service) or service.endswith(":" + action)


def _check_distribution_envelope(de: etree._Element, action: str, settings: Settings) -> _Envelope:
    """C2-C16, in table order."""
    header = first(_ITK_HEADER, de)
    tracking_id = (header.get("trackingid") or "").strip() if header is not None else ""
    if not tracking_id:
        raise invalid("C2", "Itk TrackingId missing")
    service = (header.get("service") or "").strip() if header is not None else ""
    if not service or not _service_matches(action, service):
        raise invalid("C3", "Soap Action is not equal to ITK service")

    _check_manifest(de, settings)

    sender = _check_audit_identity(de, settings)
    specs: dict[str, str] = {}
    for spec in _SPECS(de):
        key = (spec.get("key") or "").strip().lower()
        specs.setdefault(key, (spec.get("value") or "").strip())  # the first spec of each key counts
    interaction = specs.get(INTERACTION_KEY.lower(), "")
    if not interaction:
        raise invalid("C15", "Interaction missing")
    matched = classify_interaction(interaction)
    if matched is None:
        raise invalid("C16", f"Unsupported interaction: {_quote(interaction)}")

    warnings = []
    if not matched.known:
        warnings.append(f"interaction {_quote(interaction)} not in the published table (accepted by prefix)")
    ack_requested = _is_true(specs.get(ACK_REQUESTED_KEY))
    inf_ack_requested = _is_true(specs.get(INF_ACK_REQUESTED_KEY))
    for requested, kind in ((ack_requested, "business"), (inf_ack_requested, "infrastructure")):
        if requested:
            warnings.append(f"{kind} acknowledgement requested: this receiver answers synchronously only")

    address_list = first(_ADDRESS_LIST, de)
    addresses = None
    if address_list is not None:
        addresses = tuple(
            Address(uri=(a.get("uri") or "").strip(), type=a.get("type"))
            for a in _ADDRESSES(address_list)
        )
    sender_element = first(_SENDER_ADDRESS, de)
    sender_address = (sender_element.get("uri") or "").strip() if sender_element is not None else ""
    return _Envelope(
        tracking_id=tracking_id,
        service=service,
        interaction=interaction,
        event=matched.event,
        addresses=addresses,
        sender=sender,
        sender_address=sender_address or None,
        ack_requested=ack_requested,
        inf_ack_requested=inf_ack_requested,
        warnings=tuple(warnings),
    )


def _check_manifest(de: etree._Element, settings: Settings) -> None:
    """C4-C11: counts, ids, profile ids, encryption."""
    manifest_count = _count(first(_MANIFEST, de))
    payload_count = _count(first(_PAYLOAD_LIST, de))
    if manifest_count is None or manifest_count != payload_count:
        raise invalid("C4", "Manifest count and payload count don't match")
    items = _MANIFEST_ITEMS(de)
    if manifest_count != len(items):
        raise invalid("C5", "Manifest count attribute and manifest items size don't match")
    payloads = _PAYLOAD_ITEMS(de)
    if payload_count != len(payloads):
        raise invalid("C6", "Payload count attribute and payload items size don't match")
    payload_ids = [(p.get("id") or "").strip() for p in payloads]
    if not all(payload_ids):
        raise invalid("C7", "Payload id missing")
    item_ids = [(i.get("id") or "").strip() for i in items]
    if (
        set(item_ids) != set(payload_ids)
        or len(set(item_ids)) != len(item_ids)
        or len(set(payload_ids)) != len(payload_ids)
    ):
        raise invalid("C8", "Manifest and payload items IDs don't match")
    for item in items:
        if item.get("profileid") is None:
            raise invalid("C9", "Manifest profile Id missing")
    for item in items:
        profile_id = (item.get("profileid") or "").strip()
        if profile_id not in settings.profile_ids:
            raise invalid("C10", f"Invalid manifest profile Id: {_quote(profile_id)}")
    for item in items:
        if _is_true(item.get("encrypted")):
            raise invalid("C11", "Encrypted payloads are not supported", "manifestitem/@encrypted is true")


def _check_audit_identity(de: etree._Element, settings: Settings) -> str:
    """C12-C14. Returns the sender identity (the first ``urn:nhs-uk:identity:ods:`` uri)."""
    audit_identity = first(_AUDIT_IDENTITY, de)
    ids = _AUDIT_IDS(audit_identity) if audit_identity is not None else []
    if not ids:
        raise invalid("C12", "Audit Identity missing", "itk:auditIdentity/itk:id is required")
    uris = [(i.get("uri") or "").strip() for i in ids]
    senders = [(uri, code) for uri in uris if (code := sender_ods(uri))]
    if not senders:
        raise invalid("C13", f"Invalid Audit Identity value: {_quote(', '.join(uris))}")
    if settings.sender_ods_list:
        allowed = {code.strip().lower() for code in settings.sender_ods_list}
        if not any(code.lower() in allowed for _, code in senders):
            raise invalid("C14", f"Invalid Audit Identity value: {_quote(', '.join(uri for uri, _ in senders))}")
    return senders[0][0]


# -- interactions (section 3) --------------------------------------------------------------------------------

#: The interactions of the published table (without the ``urn:nhs-itk:interaction:`` prefix).
KNOWN_INTERACTIONS = (
    "primaryGeneralPractitionerRecipientNHS111CDADocument-v2-0",
    "primaryEmergencyDepartmentRecipientNHS111CDADocument-v2-0",
    "primaryOutofHourRecipientNHS111CDADocument-v2-0",
    "copyRecipientNHS111CDADocument-v2-0",
    "primaryNHS111RepeatCallerDocumentSet-v1-0",
    "primaryGeneralPractitionerRecipientIntegratedUrgentCareCDADocument-v3-0",
    "primaryEmergencyDepartmentRecipientIntegratedUrgentCareCDADocument-v3-0",
    "primaryOutofHourRecipientIntegratedUrgentCareCDADocument-v3-0",
    "primaryRepeatCallerRepositoryRecipientIntegratedUrgentCareCDADocument-v3-0",
    "copyRecipientIntegratedUrgentCareCDADocument-v3-0",
    "primaryIntegratedUrgentCareRepeatCallerDocumentSet-v1-0",
)
_KNOWN = frozenset(name.lower() for name in KNOWN_INTERACTIONS)
_EXCLUDED_PARTS = ("requestforambulance", "repeatcallersyncquery", "nullify")
_RESPONSE_SUFFIX = re.compile(r"response-v\d+-\d+$")


@dataclass(frozen=True)
class Interaction:
    """A supported interaction: ``name`` without the prefix, the MessageHeader ``event`` code, and whether the
    name is in the published table (``known``) or only accepted by its ``primary``/``copy`` prefix."""

    name: str
    event: str
    known: bool


def classify_interaction(value: str) -> Interaction | None:
    """Match an interaction id tolerantly (section 3); ``None`` when unsupported.

    Case-insensitive; the ``urn:nhs-itk:interaction:`` prefix is optional. The two nullification interactions
    (nullification.md §1) are supported, with the event :data:`~adaptor.itk.wire.NULLIFICATION`. Other names
    containing ``RequestforAmbulance``, ``RepeatCallerSyncQuery`` or ``nullify`` (another domain's
    nullification, such as ``nullifyDischargeReport-v1-0``), or ending in ``Response-vN-N``, are unsupported;
    otherwise ``primary*`` is a referral and ``copy*`` discharge details.
    """
    name = interaction_name(value.strip())
    folded = name.lower()
    if is_nullification(name):
        return Interaction(name, NULLIFICATION, True)
    if any(part in folded for part in _EXCLUDED_PARTS) or _RESPONSE_SUFFIX.search(folded):
        return None
    event = event_of(name)
    return Interaction(name, event, folded in _KNOWN) if event is not None else None


# == D1-D6: the clinical documents ===========================================================================


def _check_documents(de: etree._Element, interaction: str) -> tuple[list[etree._Element], int]:
    """D1-D3. Returns the ClinicalDocuments in payload order and the index of the one to map."""
    try:
        documents = clinical_documents(de)
    except PayloadError as exc:
        raise invalid("D1", "Payload could not be decoded", str(exc)) from None
    if not documents:
        raise invalid("D2", "Unable to find ClinicalDocument element", "ClinicalDocument missing")
    try:
        selection = select_document(documents)
    except DocumentTimeError as exc:
        raise invalid("D3", "Invalid ClinicalDocument effectiveTime", str(exc)) from None
    if len(documents) > 1 and "repeatcaller" not in interaction.lower():
        log.info(
            "several ClinicalDocuments: the newest is mapped",
            extra={"interaction": interaction, "documents": len(documents), "payload": selection.index + 1},
        )
    return documents, selection.index


def _check_cda(document: etree._Element, settings: Settings) -> tuple[list[str], PathwaysCase]:
    """D4 (reject), D5 (warn or reject) and D6 (warn) for the selected document. Returns the warnings, and the
    Pathways case as D6 read it (:attr:`ItkMessage.pathways_case`)."""
    warnings: list[str] = []
    cda = schemas.cda_schema(settings.schema_dir)
    if cda is not None:
        errors = cda.errors(document)
        if errors:
            raise invalid("D4", "schema validation failed", "; ".join(errors))

    if settings.cda_level2_validation != "off":
        level2 = schemas.level2_validator(settings.schema_dir)
        if level2 is not None:
            try:
                errors = level2.errors(document)
            except Exception as exc:
                # Our XSLT engine failing is not the sender's fault: warn, never reject for it.
                log.debug("level-2 transform failed", exc_info=True)
                errors = []
                warnings.append(f"D5: CDA level-2 check could not run ({type(exc).__name__})")
            if errors:
                if settings.cda_level2_validation == "reject":
                    raise invalid("D5", "schema validation failed", "CDA level 2: " + "; ".join(errors))
                log.debug("D5 level-2 messages: %s", errors)
                warnings.append(f"D5: CDA level-2 conformance failed ({_messages(errors)})")

    case, problem = _read_pathways(document, settings)
    if problem:
        warnings.append(f"D6: {problem}")
    return warnings, case


def _messages(errors: list[str]) -> str:
    """E.g. ``3 validator messages``: warnings count messages, never quote them (they may quote the CDA)."""
    return f"{len(errors)} validator message{'' if len(errors) == 1 else 's'}"


def _read_pathways(document: etree._Element, settings: Settings) -> tuple[PathwaysCase, str | None]:
    """D6: the document's Pathways case, read as the mapping reads it (mapping.md 3.18) within a payload's
    limits, and what is wrong with it, or ``None`` (also when there is no attachment). The case is
    :data:`~mappings.context.UNREAD` without a schema pack (rule skipped: the mapping reads it itself)."""
    schema = schemas.pathways_schema(settings.schema_dir)
    if schema is None:
        return UNREAD, None
    text = questionnaire.attachment_text(document)
    if text is None:
        return None, None  # no attachment: nothing to deliver, nothing wrong
    data = questionnaire.attachment_bytes(text)
    if data is None:
        return None, _UNDECODABLE
    try:
        check_attachment(data, parse=False)  # its size, before parsing it
        case = questionnaire.parse_case(data)
        if case is None:
            check_attachment(data)  # which limit it passes, if it passes one
    except PayloadLimitError as exc:
        return None, f"Pathways attachment refused: {exc}; {_WITHOUT_PATHWAYS}"
    except PayloadError:
        case = None
    if case is None:
        return None, _UNDECODABLE
    errors = schema.errors(case)
    if errors:
        log.debug("D6 Pathways messages: %s", errors)
        invalid_case = f"Pathways attachment invalid against {schema.name} ({_messages(errors)})"
        return case, f"{invalid_case}; its Pathways data delivered as far as it could be read"
    return case, None


_WITHOUT_PATHWAYS = "delivered without Pathways data"
_UNDECODABLE = f"Pathways attachment could not be decoded; {_WITHOUT_PATHWAYS}"


# == the whole request =======================================================================================


def digest_of(distribution_envelope: etree._Element) -> str:
    """sha256 (hex) of the exclusive C14N form of the DistributionEnvelope: the same for a resend whose SOAP
    header changed (new Timestamp, other namespace declarations on the Envelope)."""
    try:
        canonical = etree.tostring(distribution_envelope, method="c14n", exclusive=True, with_comments=False)
    except etree.C14NError:
        # Canonical XML refuses relative namespace URIs (deprecated, yet well-formed). Such a message still gets
        # an answer from the rules; its identity for resends is then the plain serialisation, which an identical
        # resend reproduces exactly.
        canonical = etree.tostring(distribution_envelope)
    return hashlib.sha256(canonical).hexdigest()


def validate_request(
    root: etree._Element, settings: Settings, allow_list: AllowList, *, now: datetime | None = None
) -> ItkMessage:
    """Apply rules A3-D6 to a parsed request and return the accepted message.

    ``now`` (aware) replaces the clock for the timestamp rules B10/B11. Raises :class:`ItkFault` for the first
    failing rule; an unexpected error becomes fault 2200 (rule E2) with the cause logged under its error id.
    """
    started = time.perf_counter()
    message_id = _request_message_id(root)
    try:
        message = _validate(root, settings, allow_list, now or datetime.now(UTC))
    except ItkFault as fault:
        if fault.relates_to is None:
            fault.relates_to = message_id
        log.debug(
            "request rejected", extra={"rule": fault.rule, "message_id": message_id, "duration_ms": _ms(started)}
        )
        raise
    except Exception as exc:
        error_id = log_internal_error(log, "validation crashed", exc, message_id=message_id)
        raise internal(error_id, relates_to=message_id) from None
    for warning in message.warnings:
        log.warning(
            "validation warning",
            extra={"message_id": message.message_id, "tracking_id": message.tracking_id, "warning": warning},
        )
    log.debug("message validated", extra={"message_id": message.message_id, "duration_ms": _ms(started)})
    return message


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _validate(root: etree._Element, settings: Settings, allow_list: AllowList, now: datetime) -> ItkMessage:
    soap = _check_envelope(root)  # A3, A4
    _check_must_understand(soap)  # A5
    message_id, action = _check_addressing(soap, settings)  # B1-B6
    username = _check_security(soap, settings, now)  # B7-B13
    de = first(_DISTRIBUTION_ENVELOPE, soap.body)
    if settings.soap_validation_enabled:  # B14
        itk_header = first(_ITK_HEADER, de) if de is not None else None
        for scope in (soap.header, itk_header):
            blank = _blank_attribute(scope) if scope is not None else None
            if blank:
                raise invalid("B14", f"Blank attribute: {_quote(blank)}")
    if de is None:
        raise invalid("C1", "DistributionEnvelope missing")
    envelope = _check_distribution_envelope(de, action, settings)  # C2-C16
    allow_list.check(envelope.addresses, relates_to=message_id)  # C17 (E1 while the list is not loaded)
    errors = schemas.distribution_envelope_errors(de, schemas.wsdl_dir(settings))  # C18
    if errors:
        raise invalid("C18", "schema validation failed", "; ".join(errors))
    documents, selected = _check_documents(de, envelope.interaction)  # D1-D3
    cda_warnings, pathways_case = _check_cda(documents[selected], settings)  # D4-D6
    warnings = list(envelope.warnings) + cda_warnings

    addresses = envelope.addresses or ()
    ods_codes = tuple(code.split(":", 1)[0].strip() for code in map(ods_code, addresses) if code)
    return ItkMessage(
        message_id=message_id,
        action=action,
        tracking_id=envelope.tracking_id,
        service=envelope.service,
        interaction=envelope.interaction,
        event=envelope.event,
        addresses=addresses,
        ods_codes=ods_codes,
        dos_ids=tuple(i for i in map(dos_id, addresses) if i),
        sender=envelope.sender,
        sender_address=envelope.sender_address,
        ack_requested=envelope.ack_requested,
        inf_ack_requested=envelope.inf_ack_requested,
        username=username,
        digest=digest_of(de),
        documents=tuple(documents),
        selected=documents[selected],
        pathways_case=pathways_case,
        warnings=tuple(warnings),
    )
