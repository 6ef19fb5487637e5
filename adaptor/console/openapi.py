"""The console API's data, as pydantic models, and its OpenAPI 3.1 document, made from them.

Each response of :mod:`adaptor.console.api` is one of these models, serialised by pydantic: the JSON Schema in the
OpenAPI document is generated from the same models (:func:`openapi_document`), so the document and the answers
cannot drift apart. pydantic is already installed with ``fhir.resources``; its JSON Schema output is the
OpenAPI 3.1 dialect, so the document needs no other library.

The states are :class:`adaptor.store.Status` itself: a state added there is in the schema's enum with no change
here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from adaptor.console.search import MAX_SEARCH
from adaptor.store import Status

API_VERSION = "1"
#: How many messages a page of the API's search holds at most.
MAX_PER_PAGE = 100


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Patient(_Model):
    """The patient, as the search index read it from the Bundle."""

    nhs_number: str | None
    name: str | None
    birth_date: str | None
    postcode: str | None


class Withdrawal(_Model):
    """How the message's sender withdrew it (a nullification: docs/README, "Nullification")."""

    reason: str = Field(description="The sender's reason, as text (else its display name, else its code)")
    reason_code: str | None
    author: str | None = Field(description="Who withdrew it, as the nullification names them")
    withdrawn_at: datetime = Field(description="The nullification's effective time")
    applied_at: datetime = Field(description="When this adaptor applied it")
    nullification_record_id: str
    nullification_message_id: str
    withdrawal_bundle_version: int | None = Field(
        description="The Bundle version that withdraws it at the receiving system; null: nothing of it was delivered"
    )


class MessageSummary(_Model):
    """A stored message as a search lists it."""

    record_id: str
    message_id: str
    tracking_id: str
    received_at: datetime
    state: Status
    interaction: str
    sender: str
    recipients: list[str] = Field(description="ODS codes, then DoS ids")
    attempts: int
    bundle_version: int | None
    indexed: bool = Field(description="False until `nhs111 db reindex` read its Bundle into the search index")
    patient: Patient | None
    disposition_code: str | None
    disposition: str | None
    receiving_service: str | None
    effective_at: datetime | None = Field(description="The clinical document's effective time")
    warnings: list[str] = Field(description="What validation and conversion warned about")
    nullified: Withdrawal | None = Field(description="Set when its sender withdrew it, in any state")


class SearchPage(_Model):
    """One page of a search, newest first, with the counts the console's state tabs show."""

    total: int = Field(description="Messages the search selects (in the states asked for)")
    page: int
    pages: int
    per_page: int
    counts: dict[str, int] = Field(description="Messages the search selects in each state, whatever `status`")
    messages: list[MessageSummary]


class Attempt(_Model):
    started_at: datetime
    finished_at: datetime | None
    outcome: str | None = Field(description="null while in progress")
    target: str
    owner: str
    error: str | None
    bundle_version: int | None


class BundleVersionInfo(_Model):
    version: int
    converted_at: datetime | None
    superseded_at: datetime | None = Field(description="null for the current version")
    size: int = Field(description="Bytes, as delivered (UTF-8)")


class Action(_Model):
    at: datetime
    operator: str
    action: str
    detail: str


class MessageDetail(MessageSummary):
    """A stored message with its history: what the console's message page shows (the documents are
    downloads: see ``links``)."""

    service: str
    status_reason: str | None = Field(description="The last error, or why it was rejected")
    delivered_at: datetime | None
    next_attempt_at: datetime
    replays: int
    delivery_attempts: list[Attempt]
    bundle_versions: list[BundleVersionInfo]
    operator_actions: list[Action]
    links: dict[str, str] = Field(description="The request, its clinical document and its Bundle to download")


class ReplayRequest(_Model):
    mode: Literal["redeliver", "reconvert"] = "redeliver"


class SelectionReplayRequest(_Model):
    record_ids: list[str] = Field(min_length=1, max_length=500)
    mode: Literal["redeliver", "reconvert"] = "redeliver"


class ReplayOutcome(_Model):
    record_id: str
    message_id: str
    previous_state: Status
    queued: bool
    bundle_version: int | None = Field(description="The version it will deliver")
    skipped: str | None = Field(description="Why it was not queued")


class SelectionReplayResult(_Model):
    results: list[ReplayOutcome]
    unknown: list[str] = Field(description="Record ids of no stored message")


class Operator(_Model):
    user: str
    may_replay: bool
    csrf_token: str | None = Field(description="For a session: send it as X-CSRF-Token on every POST")


class Problem(_Model):
    error: str
    detail: str


_MODELS: tuple[type[BaseModel], ...] = (
    SearchPage,
    MessageDetail,
    ReplayRequest,
    SelectionReplayRequest,
    ReplayOutcome,
    SelectionReplayResult,
    Operator,
    Problem,
)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


_ERRORS = {
    "400": _json(Problem, "A parameter or body that cannot be read"),
    "401": _json(Problem, "No token or session, or a wrong token"),
    "403": _json(Problem, "A read-only operator, or a session POST without its CSRF token"),
    "413": _json(Problem, "A body over 64 KiB"),
    "429": _json(Problem, "Too many failed sign-ins from this address"),
    "503": _json(Problem, "The message store cannot be read"),
}


def _text(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", "maxLength": MAX_SEARCH}}  # fmt: skip


_SEARCH_PARAMETERS = [
    _text("q", "An NHS number, or the beginning of a MessageID, trackingid or record id, or an ODS code or DoS id"),
    _text("nhs_number", "The patient's NHS number (spaces allowed)"),
    _text("name", "The beginning of the patient's family or given name, any case (two words: given and family)"),
    _text("born", "The date of birth, YYYY-MM-DD"),
    _text("postcode", "The patient's postcode, or its beginning"),
    _text("from", "Received at or after: YYYY-MM-DD or YYYY-MM-DDTHH:MM, Europe/London unless an offset is given"),
    _text("to", "Received before (a date alone: to the end of that day)"),
    _text("sender", "The sender's ODS code"),
    _text("recipient", "A recipient's ODS code or DoS id"),
    _text("interaction", "The interaction id, with or without urn:nhs-itk:interaction:"),
    _text("disposition", "A Dx code (Dx05) or words of the disposition's text"),
    {"name": "status", "in": "query", "required": False, "description": "Only these states", "style": "form",
     "explode": True, "schema": {"type": "array", "items": {"type": "string", "enum": [s.value for s in Status]}}},
    {"name": "warnings", "in": "query", "required": False, "description": "1: only messages converted with warnings",
     "schema": {"type": "string", "enum": ["0", "1"]}},
    {"name": "page", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1}},
    {"name": "per_page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE}},
]  # fmt: skip

_RECORD_ID = {"name": "record_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    """The OpenAPI 3.1 document of the console API (served at ``/console/api/openapi.json``)."""
    _, definitions = models_json_schema(
        [(model, "serialization") for model in _MODELS], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, Any] = {
        "/console/api/messages": {
            "get": {
                "operationId": "searchMessages",
                "summary": "Search the stored messages, newest first",
                "parameters": _SEARCH_PARAMETERS,
                "responses": {"200": _json(SearchPage, "A page of the search"), **_ERRORS},
            }
        },
        "/console/api/messages/{record_id}": {
            "get": {
                "operationId": "getMessage",
                "summary": "One stored message with its delivery history, Bundle versions and operators' actions",
                "parameters": [_RECORD_ID],
                "responses": {
                    "200": _json(MessageDetail, "The message"),
                    "404": _json(Problem, "No stored message has this record id"),
                    **_ERRORS,
                },
            }
        },
        "/console/api/messages/{record_id}/replay": {
            "post": {
                "operationId": "replayMessage",
                "summary": "Redeliver the stored Bundle, or reconvert the request into a new Bundle version",
                "parameters": [_RECORD_ID],
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref(ReplayRequest)}}},
                "responses": {
                    "200": _json(ReplayOutcome, "Queued, or why not (queued: false)"),
                    "404": _json(Problem, "No stored message has this record id"),
                    **_ERRORS,
                },
            }
        },
        "/console/api/replay": {
            "post": {
                "operationId": "replaySelection",
                "summary": "Replay a selection of messages (at most 500)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(SelectionReplayRequest)}},
                },
                "responses": {"200": _json(SelectionReplayResult, "What became of each"), **_ERRORS},
            }
        },
        "/console/api/me": {
            "get": {
                "operationId": "whoAmI",
                "summary": "The signed-in operator, their role, and (for a session) the CSRF token for POSTs",
                "responses": {"200": _json(Operator, "The operator"), **_ERRORS},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "NHS 111 ITK adaptor console API",
            "version": API_VERSION,
            "description": "Search stored referrals, read one with its history, and replay. Patient data: "
            "keep answers out of logs.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": definitions["$defs"],
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "PEM111_CONSOLE_TOKEN"},
                "session": {"type": "apiKey", "in": "cookie", "name": "nhs111_console"},
            },
        },
    }
