"""A SOAP client for ITK requests, built with zeep from the adaptor's WSDL: the engine of ``nhs111 send``.

Each request file is a complete SOAP 1.1 envelope, and it goes on the wire as it is: its own WS-Addressing and
WS-Security headers, its own Distribution Envelope, byte for byte (or, with ``fresh_ids``, with a new
MessageID, trackingid and Timestamp stamped in). A file that is a bare Distribution Envelope (as the IUC
specification's examples are) is sent, with ``wrap``, inside a SOAP envelope of its own
(:func:`wrap_distribution_envelope`). What zeep does:

* loads the WSDL from ``<url>?wsdl`` (the adaptor serves it, with its schemas) and finds the
  ``SendNHS111Report-v2-0`` operation in it; if the endpoint does not serve a WSDL (a TLS proxy that only
  passes POSTs on, another receiver) the adaptor's own copy in ``wsdl/`` is used instead;
* posts the request through its :class:`zeep.Transport` (a ``requests`` session carrying the TLS client
  certificate and CA bundle);
* reads the answer with the operation's binding (:meth:`SoapBinding.process_reply`): the
  ``SimpleMessageResponse`` text, or a :class:`zeep.exceptions.Fault` whose detail holds the ITK
  ``ToolkitErrorInfo``.

Why not ``client.service[...](header=..., payloads=...)``: zeep's typed path rebuilds the Distribution
Envelope from its schema model, and the model of ``itk:payload`` (mixed content with a lax ``xs:any``) loses a
base64 or gzip payload's text entirely; it would also replace the request's MessageID, Action and Timestamp with
its own, which defeats both a faithful resend (same MessageID, deduplicated by the receiver) and the fault tests
that need exactly the headers in the file. Posting the envelope through the same client's transport and binding
keeps zeep's WSDL handling and fault parsing without rewriting the message.

Nothing here raises for a bad file, a refused message or a network failure: every outcome is a
:class:`SendResult`, printed as one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

from adaptor.itk import schemas
from adaptor.itk.wire import new_upper_uuid
from adaptor.itk.xmlsafe import ITK, SOAP11, WSA, WSSE, WSU, XmlRejected, parse_xml
from adaptor.samples.envelope import SERVICE_PREFIX, TIMESTAMP_TTL, soap_envelope, xs_datetime

if TYPE_CHECKING:
    import requests
    import zeep

# zeep and requests are imported where they are used: together they cost ~150 ms, which every other `nhs111`
# command (notably `convert`, run once per file by tooling) would otherwise pay at start-up.

OPERATION = "SendNHS111Report-v2-0"
#: The adaptor's own WSDL in ``schemas.wsdl_dir()`` (the file :mod:`adaptor.http.app` serves at ``?wsdl``).
WSDL_FILE = "SendNHS111Report-v2-0.wsdl"
DEFAULT_TIMEOUT_SECONDS = 30.0
#: Longest fault or error text kept on a result line.
MAX_TEXT = 300

_ENVELOPE = f"{{{SOAP11}}}Envelope"
_DISTRIBUTION_ENVELOPE = f"{{{ITK}}}DistributionEnvelope"
_HEADER = f"{{{SOAP11}}}Header"
_MESSAGE_ID = f"{{{WSA}}}MessageID"
_ACTION = f"{{{WSA}}}Action"
_TIMESTAMP = f"{{{WSSE}}}Security/{{{WSU}}}Timestamp"
_DE_HEADER = f"{{{SOAP11}}}Body/{{{ITK}}}DistributionEnvelope/{{{ITK}}}header"
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


class SendError(Exception):
    """The client cannot be set up (no usable WSDL, bad TLS options); ``str(exc)`` is one line."""


def _one_line(text: str, limit: int = MAX_TEXT) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class SendResult:
    """What happened to one request: ``OK`` (accepted), ``FAULT`` (refused by the receiver) or ``ERROR``
    (never answered: unreadable file, connection failure, an answer that is not SOAP)."""

    source: str
    outcome: str
    message_id: str | None = None
    response: str | None = None
    fault_code: str | None = None
    error_code: str | None = None
    error_text: str | None = None
    diagnostic: str | None = None
    http_status: int | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "OK"

    def line(self) -> str:
        """One line for the operator, e.g. ``FAULT gp-referral.xml: soap:Client 1000 Message rejected (...)``."""
        if self.outcome == "OK":
            answer = "" if self.response == "OK" else f" ({_one_line(self.response or '')})"
            return f"OK    {self.source}: MessageID {self.message_id}{answer}"
        if self.outcome == "FAULT":
            parts = [self.fault_code or "soap:Fault", self.error_code or "", self.error_text or ""]
            text = " ".join(part for part in parts if part)
            if self.diagnostic:
                text += f" ({self.diagnostic})"
            return f"FAULT {self.source}: {_one_line(text)}"
        return f"ERROR {self.source}: {_one_line(self.detail or 'failed')}"


# -- TLS and the zeep client ---------------------------------------------------------------------------------


def build_session(cert: str | None = None, key: str | None = None, ca: str | None = None) -> requests.Session:
    """A ``requests`` session for mutual TLS: client certificate ``cert`` (PEM, with ``key`` when the key is a
    separate file) and the CA bundle ``ca`` that signs the server's certificate (default: the system's)."""
    if key and not cert:
        raise SendError("a client key (--key) needs its certificate (--cert)")
    for option, value in (("--cert", cert), ("--key", key), ("--ca", ca)):
        if value and not Path(value).is_file():
            raise SendError(f"{option} {value}: no such file")
    import requests

    session = requests.Session()
    if cert:
        session.cert = (cert, key) if key else cert
    if ca:
        session.verify = ca
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in the environment override session.verify; an
        # explicit --ca must win, so the environment is not consulted for this session.
        session.trust_env = False
    return session


def wsdl_url(url: str) -> str:
    """Where the adaptor serves its WSDL: ``<url>?wsdl``."""
    return f"{url}{'&' if '?' in url else '?'}wsdl"


def _connection_problem(exc: BaseException, timeout: float) -> str:
    """A one-line cause for a ``requests`` failure: ``Connection refused``, ``no answer within 30 s``..."""
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return f"TLS failed: {_one_line(str(exc.args[0] if exc.args else exc), 200)}"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    found = _ERRNO.search(str(exc))
    if found:
        return found.group(1).strip()
    return _one_line(f"{type(exc).__name__}: {exc}", 200)


class ItkSender:
    """Sends ITK request files to one endpoint URL through a zeep client built from the endpoint's WSDL."""

    def __init__(
        self,
        url: str,
        *,
        session: requests.Session | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        wsdl: str | None = None,
    ) -> None:
        from zeep.transports import Transport

        self.url = url
        self.timeout = timeout
        self.transport = Transport(session=session, timeout=timeout, operation_timeout=timeout)
        self.wsdl_location = wsdl or wsdl_url(url)
        #: Set when the endpoint's WSDL could not be loaded and the adaptor's own copy is used instead.
        self.wsdl_warning: str | None = None
        self._client, self._binding, self._operation = self._load(wsdl is not None)

    def _load(self, explicit: bool) -> tuple[zeep.Client, Any, Any]:
        import zeep

        try:
            client = zeep.Client(self.wsdl_location, transport=self.transport)
        except Exception as exc:  # zeep raises requests, XML and WSDL errors of many kinds
            if explicit:
                raise SendError(f"cannot load the WSDL {self.wsdl_location}: {self._problem(exc)}") from None
            bundled = schemas.wsdl_dir() / WSDL_FILE
            if not bundled.is_file():
                raise SendError(f"cannot load the WSDL {self.wsdl_location}: {self._problem(exc)}") from None
            self.wsdl_warning = (
                f"cannot load the WSDL {self.wsdl_location} ({self._problem(exc)}): using the adaptor's own copy"
            )
            self.wsdl_location = str(bundled)
            try:
                client = zeep.Client(self.wsdl_location, transport=self.transport)
            except Exception as bundled_exc:
                raise SendError(f"cannot load the WSDL {bundled}: {self._problem(bundled_exc)}") from None
        for service in client.wsdl.services.values():
            for port in service.ports.values():
                try:
                    return client, port.binding, port.binding.get(OPERATION)
                except ValueError:  # zeep: no such operation on this binding
                    continue
        raise SendError(f"the WSDL {self.wsdl_location} has no {OPERATION} operation")

    def _problem(self, exc: BaseException) -> str:
        import requests

        if isinstance(exc, requests.exceptions.RequestException):
            return _connection_problem(exc, self.timeout)
        return _one_line(f"{type(exc).__name__}: {exc}", 200)

    # -- sending ---------------------------------------------------------------------------------------------

    def send_file(
        self, path: Path, *, fresh_ids: bool = False, wrap: bool = False, source: str | None = None
    ) -> SendResult:
        """Send the request in ``path``; ``source`` names it on the result line (default: the path)."""
        name = source or str(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            return SendResult(name, "ERROR", detail=f"cannot read the file: {exc.strerror or exc}")
        return self.send(raw, source=name, fresh_ids=fresh_ids, wrap=wrap)

    def send(self, raw: bytes, *, source: str = "request", fresh_ids: bool = False, wrap: bool = False) -> SendResult:
        """Send one SOAP request (bytes); with ``fresh_ids`` stamp a new MessageID, trackingid and Timestamp; with
        ``wrap`` a bare Distribution Envelope is sent in a SOAP envelope of its own (a SOAP request as it is)."""
        try:
            root = parse_xml(raw)
        except XmlRejected as exc:
            return SendResult(source, "ERROR", detail=f"not a request: {exc}")
        bare = root.tag == _DISTRIBUTION_ENVELOPE
        if bare and not wrap:
            problem = "a bare DistributionEnvelope (send it with --wrap)"
            return SendResult(source, "ERROR", detail=f"not a request: {problem}")
        if not bare and root.tag != _ENVELOPE:
            return SendResult(source, "ERROR", detail="not a request: the root element is not a SOAP 1.1 Envelope")
        if bare:
            root = wrap_distribution_envelope(root, self.url)
        if fresh_ids:
            refresh_ids(root)
        if bare or fresh_ids:
            raw = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        message_id = _header_text(root, _MESSAGE_ID)
        # SOAPAction carries the request's own service (wsa:Action) like live senders; the WSDL's is the default.
        action = _header_text(root, _ACTION) or self._operation.soapaction or ""
        headers = {"SOAPAction": f'"{action}"', "Content-Type": "text/xml; charset=utf-8"}
        import requests

        try:
            response = self.transport.post(self.url, raw, headers)
        except requests.exceptions.RequestException as exc:
            problem = _connection_problem(exc, self.timeout)
            return SendResult(source, "ERROR", message_id, detail=f"cannot send to {self.url}: {problem}")
        return self._result(source, message_id, response)

    def _result(self, source: str, message_id: str | None, response: requests.Response) -> SendResult:
        import zeep.exceptions

        status = response.status_code
        try:
            answer = self._binding.process_reply(self._client, self._operation, response)
        except zeep.exceptions.Fault as fault:
            return _fault_result(source, message_id, status, fault)
        except zeep.exceptions.TransportError as exc:
            body = (exc.content or b"").decode("utf-8", "replace") if isinstance(exc.content, bytes) else ""
            text = _one_line(body, 200) if body.strip() else "no SOAP answer"
            return SendResult(source, "ERROR", message_id, http_status=status, detail=f"HTTP {status}: {text}")
        except Exception as exc:  # an answer zeep cannot read as this operation's reply
            detail = f"HTTP {status}: unreadable answer ({type(exc).__name__}: {_one_line(str(exc), 200)})"
            return SendResult(source, "ERROR", message_id, http_status=status, detail=detail)
        return SendResult(
            source, "OK", message_id, response=str(answer) if answer is not None else "", http_status=status
        )


def _fault_result(source: str, message_id: str | None, status: int, fault: zeep.exceptions.Fault) -> SendResult:
    """The SOAP fault with its ITK ToolkitErrorInfo (ErrorCode, ErrorText, ErrorDiagnosticText) when present."""
    info = None
    if isinstance(fault.detail, etree._Element):
        info = fault.detail.find(f"{{{ITK}}}ToolkitErrorInfo")
    error_code = error_text = diagnostic = None
    if info is not None:
        error_code = (info.findtext(f"{{{ITK}}}ErrorCode") or "").strip() or None
        error_text = (info.findtext(f"{{{ITK}}}ErrorText") or "").strip() or None
        diagnostic = (info.findtext(f"{{{ITK}}}ErrorDiagnosticText") or "").strip() or None
    return SendResult(
        source,
        "FAULT",
        message_id,
        fault_code=(fault.code or "").strip() or None,
        error_code=error_code,
        error_text=error_text or _one_line(fault.message or ""),
        diagnostic=diagnostic,
        http_status=status,
    )


# -- the request's own headers -------------------------------------------------------------------------------


def wrap_distribution_envelope(distribution_envelope: etree._Element, url: str) -> etree._Element:
    """A SOAP request carrying ``distribution_envelope`` (moved into it) to the endpoint ``url``, with fresh
    WS-Addressing headers as live senders write them: a new MessageID, Action = the envelope's ``@service`` (a
    short name such as ``SendNHS111Report-v2-0`` in full, ``urn:nhs-itk:services:201005:...``), To = ``url``,
    the anonymous ReplyTo, and a WS-Security Timestamp valid from now (no Username). The Distribution Envelope
    itself, trackingid included, is not changed."""
    header = distribution_envelope.find(f"{{{ITK}}}header")
    service = (header.get("service") or "").strip() if header is not None else ""
    if not service:
        return soap_envelope(distribution_envelope, to=url)  # the receiver says what is missing (rule C3)
    return soap_envelope(distribution_envelope, action=service if ":" in service else SERVICE_PREFIX + service, to=url)



def _header_text(root: etree._Element, tag: str) -> str | None:
    header = root.find(_HEADER)
    element = header.find(tag) if header is not None else None
    text = (element.text or "").strip() if element is not None else ""
    return text or None


def _parse_xs_datetime(text: str | None) -> datetime | None:
    try:
        value = datetime.fromisoformat((text or "").strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def refresh_ids(root: etree._Element, now: datetime | None = None) -> None:
    """Make ``root`` a new message: new wsa:MessageID and itk:header/@trackingid (upper-case UUIDs), and a
    Timestamp created ``now`` that keeps the request's lifetime (10 minutes when it cannot be read).

    A resend with the old ids would be answered OK but recognised as a duplicate and not delivered again
    (wire-contract.md §5.3); fresh ids let the same file be sent, and stored, again.
    """
    now = now or datetime.now(UTC)
    header = root.find(_HEADER)
    if header is None:
        header = etree.Element(_HEADER)
        root.insert(0, header)
    message_id = header.find(_MESSAGE_ID)
    if message_id is None:
        message_id = etree.Element(_MESSAGE_ID)
        header.insert(0, message_id)
    message_id.text = new_upper_uuid()

    de_header = root.find(_DE_HEADER)
    if de_header is not None:
        de_header.set("trackingid", new_upper_uuid())

    timestamp = header.find(_TIMESTAMP)
    if timestamp is not None:
        created = timestamp.find(f"{{{WSU}}}Created")
        expires = timestamp.find(f"{{{WSU}}}Expires")
        lifetime = TIMESTAMP_TTL
        if created is not None and expires is not None:
            start, end = _parse_xs_datetime(created.text), _parse_xs_datetime(expires.text)
            if start is not None and end is not None and timedelta(0) < end - start <= timedelta(days=1):
                lifetime = end - start
        if created is not None:
            created.text = xs_datetime(now)
        if expires is not None:
            expires.text = xs_datetime(now + lifetime)


# -- folders -------------------------------------------------------------------------------------------------


def request_files(paths: Iterable[Path]) -> list[Path]:
    """The files to send: each FILE as given, and the ``*.xml`` files of each DIR in name order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".xml"))
        else:
            files.append(path)
    return files
