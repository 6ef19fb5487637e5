"""The WSGI application: the ITK endpoint, its WSDL, and the health check.

A small dispatcher in front decides by path and method (wire-contract.md section 1):

* ``POST`` on a report path (``settings.report_paths``) goes to the SOAP endpoint (:mod:`adaptor.http.soap`) once
  the media type and the declared size are acceptable: ``text/xml`` and ``application/xml`` with any
  parameters; ``application/soap+xml`` and a missing Content-Type are passed on too, so the envelope
  namespace decides (SOAP 1.2 gets ``VersionMismatch``); any other type gets 415. A body larger than
  ``settings.max_request_bytes`` gets fault 1000 (rule A1) without being read.
* Everything else is a small Flask application: ``GET <report path>?wsdl`` (the WSDL, addressed to the
  configured endpoint URL, :class:`ServiceDocuments`), ``GET <report path>?xsd=<file>`` (the schemas it
  includes), ``GET /healthz`` (liveness),
  ``GET /readyz`` (readiness, :mod:`adaptor.ops.readiness`), ``GET /metrics`` (Prometheus, :mod:`adaptor.ops.metrics`),
  and the operator's console under ``/console`` when it is configured (:mod:`adaptor.console`); any other method
  on a report path gets 405 with ``Allow: POST``, unknown paths 404.

Every fault answered here or by the SOAP endpoint is kept in the store's ``rejections`` table
(:mod:`adaptor.http.facts`). Every ITK POST is timed and counted (``nhs111_requests_total``,
``nhs111_request_duration_seconds``) and ends with one ``request answered`` log line carrying its identifiers,
outcome and duration.

The application owns no component: :func:`build_app` builds it over the :class:`~adaptor.composition.Components`
of the composition root; :func:`create_app` builds those too, for a server other than ``nhs111 serve`` and for
tests.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from lxml import etree

from adaptor import composition
from adaptor.config import Settings
from adaptor.console import install_console
from adaptor.delivery.forwarders import Forwarder
from adaptor.delivery.outbox import OutboxWorker
from adaptor.http.facts import REQUEST_FACTS, RequestFacts, answer_fault, request_facts
from adaptor.http.soap import build_soap_app
from adaptor.itk import faults
from adaptor.itk import rules as itk
from adaptor.itk.allowlist import AllowList
from adaptor.itk.faults import ItkFault
from adaptor.itk.schemas import wsdl_dir
from adaptor.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from adaptor.ops.metrics import Metrics
from adaptor.ops.readiness import Readiness
from adaptor.store import MessageStore

log = logging.getLogger("adaptor.web")  # pinned: the JSON log format names it

WSDL_FILE = "SendNHS111Report-v2-0.wsdl"

#: Media types passed to the SOAP endpoint ("" = no Content-Type header).
ACCEPTED_MEDIA_TYPES = frozenset({"text/xml", "application/xml", "application/soap+xml", ""})

_XML_TYPE = "text/xml; charset=utf-8"
_WSDL = "http://schemas.xmlsoap.org/wsdl/"
_WSDL_SOAP = "http://schemas.xmlsoap.org/wsdl/soap/"
_XSD = "http://www.w3.org/2001/XMLSchema"
_SOAP_ADDRESS = f"{{{_WSDL}}}service/{{{_WSDL}}}port/{{{_WSDL_SOAP}}}address"
_SCHEMA_REFERENCES = (f"{{{_XSD}}}include", f"{{{_XSD}}}import", f"{{{_XSD}}}redefine")

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ServiceDocuments:
    """The WSDL and the XSDs it includes, loaded and addressed once.

    The WSDL's ``soap:address`` is ``endpoint_url``, the configured endpoint URL (the first
    ``PEM111_SOAP_SEND_TO``), never anything taken from the request: a Host header is the client's to choose, and
    a WSDL that echoes it would send other clients of a cache or proxy wherever that client said. The schema
    references are relative (``?xsd=<file>``): a client resolves them against the URL it fetched the WSDL from,
    so the WSDL loads over whatever address reaches the adaptor, and no request header goes into it either.

    The files come from :func:`adaptor.itk.schemas.wsdl_dir`; only the ``.xsd`` files in that folder are served.
    """

    def __init__(self, folder: Path, endpoint_url: str) -> None:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
        wsdl = etree.parse(str(folder / WSDL_FILE), parser)
        schemas = {path.name: etree.parse(str(path), parser) for path in sorted(folder.glob("*.xsd"))}
        for address in wsdl.getroot().iterfind(_SOAP_ADDRESS):
            address.set("location", endpoint_url)
        #: The WSDL, as served.
        self.wsdl = self._serialised(wsdl, schemas)
        self._schemas = {name: self._serialised(document, schemas) for name, document in schemas.items()}

    @property
    def schema_names(self) -> tuple[str, ...]:
        return tuple(self._schemas)

    def schema(self, name: str) -> bytes | None:
        """The named XSD, as served, or ``None`` when there is no such file."""
        return self._schemas.get(name)

    @staticmethod
    def _serialised(document: etree._ElementTree, schemas: Mapping[str, etree._ElementTree]) -> bytes:
        for reference in document.iter(*_SCHEMA_REFERENCES):
            location = reference.get("schemaLocation")
            if location in schemas:
                reference.set("schemaLocation", f"?xsd={location}")
        return etree.tostring(document, xml_declaration=True, encoding="UTF-8")


def _create_site(
    settings: Settings, documents: ServiceDocuments, readiness: Readiness, metrics: Metrics
) -> Flask:
    """The Flask application for every request that is not a SOAP POST."""
    site = Flask(__name__)

    @site.get("/healthz")
    def healthz() -> Response:
        # Liveness: answered while the process can serve HTTP. Whether it can do its work is /readyz.
        return jsonify(status="ok")

    @site.get("/readyz")
    def readyz() -> Response:
        # ?check=store (repeatable) limits the answer to the named checks (see the README on async mode).
        only = request.args.getlist("check")
        unknown = sorted(set(only) - set(readiness.names))
        if unknown:
            return _text_response(400, f"Unknown check {', '.join(unknown)}; known: {', '.join(readiness.names)}")
        report = readiness.evaluate(only)
        response = jsonify(report.body())
        response.status_code = 200 if report.ok else 503
        response.headers["Cache-Control"] = "no-store"
        return response

    @site.get("/metrics")
    def metrics_page() -> Response:
        response = Response(metrics.exposition(), content_type=METRICS_CONTENT_TYPE)
        response.headers["Cache-Control"] = "no-store"
        return response

    def report_path() -> Response:
        if request.method in ("GET", "HEAD"):
            arguments = {key.lower(): value for key, value in request.args.items()}
            if "wsdl" in arguments:
                return Response(documents.wsdl, content_type=_XML_TYPE)
            if "xsd" in arguments:
                schema = documents.schema(arguments["xsd"])
                if schema is None:
                    return _text_response(404, "No such schema")
                return Response(schema, content_type=_XML_TYPE)
        response = _text_response(405, "Method Not Allowed: the ITK endpoint accepts POST")
        response.headers["Allow"] = "POST"
        return response

    methods = ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]
    for index, path in enumerate(settings.report_paths):
        site.add_url_rule(path, f"report_{index}", report_path, methods=methods, provide_automatic_options=False)

    @site.errorhandler(404)
    def not_found(_error: Exception) -> Response:
        return _text_response(404, "Not Found")

    @site.errorhandler(405)
    def method_not_allowed(_error: Exception) -> Response:
        return _text_response(405, "Method Not Allowed")

    return site


def _text_response(status: int, text: str) -> Response:
    return Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")


class ReceiverApp:
    """The WSGI callable served by :mod:`adaptor.http.server`, over ``components``.

    The faults the dispatcher answers before the SOAP endpoint sees the request (rule A1, the last-line 2200)
    are recorded in the components' store, like the endpoint's; their metrics count and time the ITK POSTs.
    :meth:`close` closes the components (those they built themselves).
    """

    def __init__(self, components: composition.Components, soap_app: WsgiApp, site: Flask) -> None:
        self.components = components
        self.settings = components.settings
        self.requests = components.requests
        self.metrics = components.metrics
        self.soap_app = soap_app
        self.site = site
        self._report_paths = frozenset(self.settings.report_paths)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") in self._report_paths:
            return self._post_report(environ, start_response)
        return self.site.wsgi_app(environ, start_response)

    def close(self) -> None:
        self.components.close()

    def _post_report(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Answer one ITK POST (:meth:`_answer_report`), then count, time and log it.

        The time is taken when the answer is ready: the SOAP endpoint does all its work before it returns, so
        this is the processing time, not the time the client takes to read the answer.
        """
        started = time.perf_counter()
        facts = environ[REQUEST_FACTS] = RequestFacts()
        statuses: list[str] = []

        def recording_start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return start_response(status, headers, exc_info)

        self.requests.request_started()
        try:
            body = self._answer_report(environ, recording_start_response)
        finally:
            self.requests.request_finished()
        seconds = time.perf_counter() - started
        status = statuses[-1] if statuses else "500"
        if status.startswith("200"):
            outcome = "ok"
        elif facts.fault is not None:
            outcome = "fault"
        else:
            outcome = "refused"  # an HTTP error instead of a SOAP answer (415)
        self.metrics.request_answered(outcome, seconds, facts.fault)
        log.info(
            "request answered",
            extra={
                "path": environ.get("PATH_INFO"),  # one of the configured report paths, never a query string
                "status": int(status[:3]) if status[:3].isdigit() else None,
                "outcome": outcome,
                **facts.log_fields(),
                "duration_ms": round(seconds * 1000, 1),
            },
        )
        return body

    def _answer_report(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        media_type = (environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
        if media_type not in ACCEPTED_MEDIA_TYPES:
            return _plain(start_response, "415 Unsupported Media Type", "Content-Type must be text/xml")

        limit = self.settings.max_request_bytes
        declared = _content_length(environ)
        if declared is not None and declared > limit:
            return self._fault(environ, start_response, itk.too_large(self.settings))
        try:
            body = _read_body(environ, declared, limit)
        except TimeoutError:
            # The client stopped sending mid-body: its doing, not a fault of ours (no 2200, nothing at ERROR).
            log.warning("client timeout: the request body did not arrive in time", extra={"declared_bytes": declared})
            return _plain(
                start_response, "408 Request Timeout", "The request body did not arrive in time", close=True
            )
        if len(body) > limit:
            return self._fault(environ, start_response, itk.too_large(self.settings))
        environ = {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}

        try:
            return self.soap_app(environ, start_response)
        except Exception as exc:
            # adaptor.http.soap answers every error itself; this is the last line (rule E2).
            error_id = faults.log_internal_error(log, "internal error", exc, where="in the SOAP endpoint")
            return self._fault(environ, start_response, faults.internal(error_id))
        finally:
            # spyne's context keeps this environ in a reference cycle: let the body go now, not at the next
            # run of the cyclic garbage collector.
            del environ["wsgi.input"]

    def _fault(self, environ: dict[str, Any], start_response: StartResponse, fault: ItkFault) -> list[bytes]:
        body = answer_fault(fault, self.components.store, request_facts(environ))
        start_response("500 Internal Server Error", [("Content-Type", _XML_TYPE), ("Content-Length", str(len(body)))])
        return [body]


def _content_length(environ: dict[str, Any]) -> int | None:
    try:
        value = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return value if value >= 0 else None


def _read_body(environ: dict[str, Any], declared: int | None, limit: int) -> bytes:
    """The request body, read here so that a client that stalls is told apart from a failure of the endpoint
    (the server's socket timeout raises :class:`TimeoutError`). With a Content-Length (at most ``limit``, checked
    before) it is read in one call, as spyne would; without one (a server that passes chunked bodies through) at
    most one byte more than ``limit`` is read, so that a longer body can be refused."""
    stream = environ["wsgi.input"]
    if declared is not None:
        return bytes(stream.read(declared)) if declared else b""
    # Without Content-Length a WSGI body may only be read to its end when the server says it is terminated.
    if not environ.get("wsgi.input_terminated"):
        return b""
    chunks: list[bytes] = []
    remaining = limit + 1
    while remaining > 0:
        chunk = stream.read(min(remaining, 64 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _plain(start_response: StartResponse, status: str, text: str, *, close: bool = False) -> list[bytes]:
    body = (text + "\n").encode("utf-8")
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, [*headers, ("Connection", "close")] if close else headers)
    return [body]


def build_app(components: composition.Components) -> ReceiverApp:
    """The complete WSGI application over ``components`` (:mod:`adaptor.composition`): the SOAP endpoint, the
    site with its WSDL, health, readiness and metrics pages, and the console when it is configured."""
    settings = components.settings
    documents = ServiceDocuments(wsdl_dir(settings), settings.soap_source_endpoint)
    site = _create_site(settings, documents, components.readiness, components.metrics)
    install_console(site, settings, store=components.store, wake=components.worker.wake)
    soap_app = build_soap_app(
        settings, components.receiver, allow_list=components.allow_list, store=components.store
    )
    return ReceiverApp(components, soap_app, site)


def create_app(
    settings: Settings,
    *,
    store: MessageStore | None = None,
    forwarder: Forwarder | None = None,
    allow_list: AllowList | None = None,
    worker: OutboxWorker | None = None,
) -> ReceiverApp:
    """The complete WSGI application with its components (:func:`adaptor.composition.build`). Components not
    given are created from ``settings`` (the allow-list and the outbox worker's ``PEM111_DELIVERY_WORKERS``
    threads started); :meth:`ReceiverApp.close` stops and closes only those. A ``worker`` that is given is only
    woken when a message is stored: its owner starts it; its deliveries are counted in this application's
    metrics from now on (:meth:`OutboxWorker.report_to`)."""
    components = composition.build(settings, store=store, forwarder=forwarder, allow_list=allow_list, worker=worker)
    try:
        components.start_delivery()
        return build_app(components)
    except BaseException:
        components.close()
        raise
