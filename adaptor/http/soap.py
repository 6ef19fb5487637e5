"""The SOAP 1.1 endpoint for ``SendNHS111Report-v2-0``, built on spyne. The only module that imports spyne.

spyne does the SOAP plumbing (WSGI request handling, method dispatch on the body element, the fault path)
while this project owns every byte on the wire:

* :class:`ItkSoap11` replaces spyne's parsing with :func:`adaptor.itk.rules.parse_request` (one parse of the raw
  bytes, DOCTYPEs refused, no entity resolution) and :func:`adaptor.itk.rules.validate_request`, and replaces
  spyne's serialisation with :func:`adaptor.itk.responses.success_response` /
  :func:`adaptor.itk.responses.fault_response`.
* The one service method hands the validated :class:`~adaptor.itk.message.ItkMessage` to
  :meth:`adaptor.accept.ReceiverService.accept` and answers ``OK``.
* Any :class:`~adaptor.itk.faults.ItkFault` becomes that fault (HTTP 500); any other exception becomes fault 2200
  with an error id that is logged (rule E2), never a traceback on the wire.
* Every fault is logged and kept in the store's ``rejections`` table (:func:`adaptor.http.facts.answer_fault`).
* What the request turned out to be (its identifiers, the fault answered) is written into the
  :class:`~adaptor.http.facts.RequestFacts` that :mod:`adaptor.http.app` leaves in the WSGI environ, for the
  request's summary log line and its metrics.
* Requests are validated against the allow-list and refusals recorded in the store that
  :func:`build_soap_app` is given; accepted messages go to the :class:`~adaptor.accept.ReceiverService`.

spyne's own loggers are switched off: on errors it logs whole request documents, which carry patient data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from lxml import etree

from adaptor.ops.logs import silence_spyne_logging

# Before the first spyne import: spyne logs while its modules load.
silence_spyne_logging()

import spyne.const  # noqa: E402
from spyne import AnyXml, Application, Service, Unicode, rpc  # noqa: E402
from spyne.error import RequestTooLongError  # noqa: E402
from spyne.model.fault import Fault as SpyneFault  # noqa: E402
from spyne.protocol.soap import Soap11  # noqa: E402
from spyne.server.wsgi import WsgiApplication  # noqa: E402

from adaptor.accept import ReceiverService  # noqa: E402
from adaptor.config import Settings  # noqa: E402
from adaptor.http.facts import RequestFacts, answer_fault, request_facts  # noqa: E402
from adaptor.itk import faults, responses  # noqa: E402
from adaptor.itk import rules as itk  # noqa: E402
from adaptor.itk.allowlist import AllowList  # noqa: E402
from adaptor.itk.faults import ItkFault  # noqa: E402
from adaptor.itk.message import ItkMessage  # noqa: E402
from adaptor.itk.wire import sender_ods  # noqa: E402
from adaptor.itk.xmlsafe import ITK, SOAP11, xpath_values  # noqa: E402
from adaptor.store import MessageStore  # noqa: E402

log = logging.getLogger("adaptor.soap")  # pinned: the JSON log format names it

# spyne runs a full gc.collect() when a context closes, at most once a second: 30-40 ms with the GIL held, under
# load once a second, for every request in flight. Nothing here needs it: _let_go frees the request's bytes and
# tree when the answer is made, and the collector's own thresholds deal with the rest.
spyne.const.MIN_GC_INTERVAL = float("inf")

SERVICE_NAME = "SendNHS111Report-v2-0"
DISTRIBUTION_ENVELOPE = f"{{{ITK}}}DistributionEnvelope"
SIMPLE_MESSAGE_RESPONSE = f"{{{ITK}}}SimpleMessageResponse"

_BODY_DISTRIBUTION_ENVELOPE = f"{{{SOAP11}}}Body/{DISTRIBUTION_ENVELOPE}"
_TRACKING_ID = xpath_values("soap:Body/itk:DistributionEnvelope/itk:header/@trackingid")
_AUDIT_IDENTITIES = xpath_values("soap:Body/itk:DistributionEnvelope/itk:header/itk:auditIdentity/itk:id/@uri")


@dataclass
class _Exchange:
    """What one request carries through spyne, kept on ``ctx.udc`` (spyne's slot for user data)."""

    raw: bytes
    root: etree._Element | None = None  # set once the request parsed (rules A1, A2)
    message: ItkMessage | None = None  # set once the request passed validation
    #: The spyne context that parsed the request; spyne answers from a copy of it (see _let_go).
    parsing_context: Any = None

    @property
    def message_id(self) -> str | None:
        return self.message.message_id if self.message is not None else None

    def identifiers(self) -> tuple[str | None, str | None]:
        """The trackingid and sender ODS code, as far as they could be read, for the rejections table.
        Never raises (it runs on the fault path)."""
        if self.message is not None:
            return self.message.tracking_id, sender_ods(self.message.sender)
        if self.root is None:
            return None, None
        try:
            tracking_ids = _TRACKING_ID(self.root)
            senders = [ods for ods in map(sender_ods, _AUDIT_IDENTITIES(self.root)) if ods]
        except Exception:  # a refused request can be any shape; the identifiers are only a convenience
            return None, None
        return (tracking_ids[0].strip() or None) if tracking_ids else None, senders[0] if senders else None


class _CarriedFault(SpyneFault):
    """An :class:`ItkFault` travelling along spyne's error path, which only routes spyne's own Fault type."""

    def __init__(self, fault: ItkFault) -> None:
        super().__init__(faultcode=fault.faultcode.value, faultstring=fault.text)
        self.itk_fault = fault


def _let_go(ctx: Any) -> None:
    """Drop the request's bytes and tree from spyne's context once the answer is made, so that they are freed
    now rather than whenever the cyclic garbage collector next runs (spyne's context sits in reference cycles)."""
    exchange: _Exchange | None = ctx.udc
    contexts = [ctx]
    if exchange is not None:
        contexts.append(exchange.parsing_context)
        exchange.raw, exchange.root, exchange.message, exchange.parsing_context = b"", None, None, None
    for context in contexts:
        if context is not None:
            context.udc = None
            context.in_string = context.in_document = context.in_body_doc = context.in_object = None
    # A fault's traceback holds the frames that raised it, and their locals: the request's bytes and tree, and
    # the context itself (a cycle). The fault is answered from its fields; its traceback was logged if needed.
    error = ctx.out_error
    while error is not None:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__


def _internal_fault(cause: BaseException, relates_to: str | None, where: str) -> _CarriedFault:
    """Fault 2200 (rule E2) for an unexpected exception; the cause is logged under a new error id."""
    error_id = faults.log_internal_error(log, "internal error", cause, where=where, message_id=relates_to)
    return _CarriedFault(faults.internal(error_id, relates_to=relates_to))


class SendNHS111Report(Service):
    """The ITK service: one operation whose input is the bare ``itk:DistributionEnvelope`` body element."""

    __service_name__ = SERVICE_NAME

    @rpc(
        AnyXml,
        _body_style="bare",
        _in_message_name=DISTRIBUTION_ENVELOPE,
        _returns=Unicode,
        _out_message_name=SIMPLE_MESSAGE_RESPONSE,
    )
    def send_report(ctx: Any, distribution_envelope: etree._Element) -> str:
        """Accept the validated message; the return value is the SimpleMessageResponse text.

        spyne calls it with its method context first (no ``self``); the message itself is on ``ctx.udc``.
        """
        exchange: _Exchange = ctx.udc
        endpoint: _Endpoint = ctx.app.config
        assert exchange.message is not None  # validation ran in ItkSoap11.create_in_document
        endpoint.receiver.accept(exchange.message, exchange.raw)
        if endpoint.settings.ok_with_message_id:
            return f"OK:{exchange.message.message_id}"
        return "OK"

    @classmethod
    def call_wrapper(cls, ctx: Any, args: Any = None) -> Any:
        # spyne turns any exception from the method into its own generic Server fault: keep ours instead.
        try:
            return super().call_wrapper(ctx, args)
        except ItkFault as fault:
            raise _CarriedFault(fault) from None
        except SpyneFault:
            raise
        except Exception as exc:
            exchange: _Exchange = ctx.udc
            raise _internal_fault(exc, exchange.message_id, "while accepting a message") from None


class ItkSoap11(Soap11):
    """spyne's SOAP 1.1 protocol with this project's parsing, validation and response bytes."""

    mime_type = "text/xml; charset=utf-8"

    def __init__(self, endpoint: _Endpoint) -> None:
        super().__init__()
        self.settings = endpoint.settings
        self.endpoint = endpoint

    # -- in --------------------------------------------------------------------------------------------------

    def create_in_document(self, ctx: Any, charset: str | None = None) -> None:
        """Parse and validate the raw request bytes; the charset from Content-Type is ignored on purpose:
        the XML declaration (or BOM) decides the encoding."""
        exchange = ctx.udc = _Exchange(raw=b"", parsing_context=ctx)
        try:
            exchange.raw = b"".join(ctx.in_string)
            root = exchange.root = itk.parse_request(exchange.raw, self.settings)
            # Answers every rule with its fault, and any unexpected error with 2200 itself.
            exchange.message = itk.validate_request(root, self.settings, self.endpoint.allow_list)
        except ItkFault as fault:
            raise _CarriedFault(fault) from None
        except RequestTooLongError:
            # Only reachable without adaptor.http.app in front (it checks the size first).
            raise _CarriedFault(itk.too_large(self.settings)) from None
        except Exception as exc:
            raise _internal_fault(exc, None, "while reading a request") from None
        ctx.in_document = root
        request_facts(ctx.transport.req_env).note_message(exchange.message)
        self._log_soap_action(ctx, exchange.message)

    def decompose_incoming_envelope(self, ctx: Any, message: Any = None) -> None:
        # Validation guarantees soap:Body/itk:DistributionEnvelope; dispatch on that element, as spyne does.
        ctx.in_header_doc = None
        ctx.in_body_doc = ctx.in_document.find(_BODY_DISTRIBUTION_ENVELOPE)
        ctx.method_request_string = DISTRIBUTION_ENVELOPE

    def deserialize(self, ctx: Any, message: Any) -> None:
        # The method takes the element itself: spyne's object mapping would walk a 100 KB CDA for nothing.
        self.event_manager.fire_event("before_deserialize", ctx)
        ctx.in_header = None
        ctx.in_object = ctx.in_body_doc
        self.event_manager.fire_event("after_deserialize", ctx)

    # -- out -------------------------------------------------------------------------------------------------

    def serialize(self, ctx: Any, message: Any) -> None:
        # Nothing to build: create_out_string produces the bytes directly.
        self.event_manager.fire_event("before_serialize", ctx)
        self.event_manager.fire_event("after_serialize", ctx)

    def create_out_string(self, ctx: Any, charset: str | None = None) -> None:
        try:
            ctx.out_string = [self._answer_bytes(ctx)]
        finally:
            _let_go(ctx)

    def _answer_bytes(self, ctx: Any) -> bytes:
        exchange: _Exchange | None = ctx.udc
        if ctx.out_error is not None:
            return self._fault_bytes(ctx.out_error, exchange, request_facts(ctx.transport.req_env))
        assert exchange is not None and exchange.message is not None
        message = exchange.message
        ok_text = ctx.out_object[0] if ctx.out_object else "OK"
        return responses.success_response(message.message_id, message.action, ok_text=ok_text)

    def fault_to_http_response_code(self, fault: Any) -> str:
        return "500 Internal Server Error"

    # -- helpers ---------------------------------------------------------------------------------------------

    def _fault_bytes(self, error: SpyneFault, exchange: _Exchange | None, facts: RequestFacts) -> bytes:
        if isinstance(error, _CarriedFault):
            fault = error.itk_fault
        else:
            # A fault raised by spyne itself (it should never get the chance): 2200, never spyne's text.
            relates_to = exchange.message_id if exchange else None
            fault = _internal_fault(error, relates_to, f"in spyne ({error.faultcode})").itk_fault
        tracking_id, sender = exchange.identifiers() if exchange is not None else (None, None)
        return answer_fault(fault, self.endpoint.store, facts, tracking_id=tracking_id, sender=sender)

    @staticmethod
    def _log_soap_action(ctx: Any, message: ItkMessage) -> None:
        """A SOAPAction header that differs from wsa:Action is logged, never faulted (wire-contract.md 1)."""
        header = ctx.transport.req_env.get("HTTP_SOAPACTION", "").strip().strip('"').strip()
        if header and header != message.action:
            log.info(
                "SOAPAction differs from wsa:Action",
                extra={"soap_action": header, "action": message.action, "message_id": message.message_id},
            )


@dataclass(frozen=True)
class _Endpoint:
    """What the protocol and the service method need (the method reaches it as ``ctx.app.config``)."""

    settings: Settings
    receiver: ReceiverService
    allow_list: AllowList
    store: MessageStore


def build_soap_app(
    settings: Settings, receiver: ReceiverService, *, allow_list: AllowList, store: MessageStore
) -> WsgiApplication:
    """The WSGI application that answers SOAP POSTs (only POSTs: :mod:`adaptor.http.app` routes everything else).

    Requests are validated against ``allow_list``, accepted by ``receiver``, and refused ones recorded in
    ``store``. :mod:`adaptor.http.app` checks the body size before calling it; the limits given to spyne here
    are a second line.
    """
    endpoint = _Endpoint(settings, receiver, allow_list, store)
    application = Application(
        [SendNHS111Report],
        tns=ITK,
        name=SERVICE_NAME,
        # spyne wants one protocol instance per direction.
        in_protocol=ItkSoap11(endpoint),
        out_protocol=ItkSoap11(endpoint),
        config=endpoint,
    )
    limit = settings.max_request_bytes + 1
    # block_length = the limit: spyne reads the (already size-checked) body in one read call.
    # chunked=True is what works: with False spyne joins the byte strings of the answer as str (spyne 2.14 bug);
    # the answer is one byte string either way and spyne sets its Content-Length.
    return WsgiApplication(application, chunked=True, max_content_length=limit, block_length=limit)
