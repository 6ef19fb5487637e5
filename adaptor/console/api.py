"""The console's JSON API under ``/console/api``: the same search, message and replay as the pages, for scripts.

Authenticated as the pages are (:mod:`adaptor.console.access`): ``Authorization: Bearer <PEM111_CONSOLE_TOKEN>``,
or a signed-in session, whose POSTs carry the session's CSRF token in ``X-CSRF-Token`` (``GET /console/api/me``
hands it out). Errors are JSON ``{"error", "detail"}`` with the HTTP status; a read-only operator gets 403 from
the replays. The OpenAPI document is ``GET /console/api/openapi.json`` (:mod:`.openapi`).
"""

from __future__ import annotations

import json
import math
from typing import Any

from flask import Response, abort, g, request, session, url_for
from pydantic import BaseModel, ValidationError

from adaptor.console.access import blueprint, require_replay, signed_in_user
from adaptor.console.openapi import (
    MAX_PER_PAGE,
    Action,
    Attempt,
    BundleVersionInfo,
    MessageDetail,
    MessageSummary,
    Operator,
    Patient,
    ReplayOutcome,
    ReplayRequest,
    SearchPage,
    SelectionReplayRequest,
    SelectionReplayResult,
    Withdrawal,
    openapi_document,
)
from adaptor.console.replay import replay_records
from adaptor.console.search import SearchError, read_search
from adaptor.console.state import console_state
from adaptor.console.views import PAGE_SIZE
from adaptor.store import ReplayResult, StoredMessage


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(model.model_dump_json(), status=status, mimetype="application/json")


def _body(model: type[BaseModel], *, required: bool) -> Any:
    """The request's JSON body read as ``model``; 400 when it is not one."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        if required:
            abort(400, description="A JSON body is required.")
        return model()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        abort(400, description=f"{where}: {first['msg']}")


def _int_arg(name: str, default: int, maximum: int | None = None) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        abort(400, description=f"{name}: {text[:20]!r} is not a whole number")
    if value < 1 or (maximum is not None and value > maximum):
        abort(400, description=f"{name}: must be from 1 to {maximum}" if maximum else f"{name}: must be at least 1")
    return value


def summary(record: StoredMessage) -> dict[str, Any]:
    index = record.index
    patient = None
    if index is not None and (index.patient_name or index.nhs_number):
        patient = Patient(
            nhs_number=index.nhs_number, name=index.patient_name, birth_date=index.birth_date, postcode=index.postcode
        )
    return {
        "record_id": record.id,
        "message_id": record.message_id,
        "tracking_id": record.tracking_id,
        "received_at": record.received_at,
        "state": record.status,
        "interaction": record.interaction,
        "sender": record.sender,
        "recipients": [*record.ods_codes, *record.dos_ids],
        "attempts": record.attempts,
        "bundle_version": record.bundle_version,
        "indexed": index is not None and index.complete,
        "patient": patient,
        "disposition_code": index.disposition_code if index else None,
        "disposition": index.disposition if index else None,
        "receiving_service": index.receiving_service if index else None,
        "effective_at": index.effective_at if index else None,
        "warnings": list(index.warnings) if index else [],
        "nullified": _withdrawal(record),
    }


def _withdrawal(record: StoredMessage) -> Withdrawal | None:
    if record.nullified is None:
        return None
    by = record.nullified.nullification
    return Withdrawal(
        reason=by.reason,
        reason_code=by.reason_code,
        author=by.author,
        withdrawn_at=by.effective_at,
        applied_at=record.nullified.nullified_at,
        nullification_record_id=by.record_id,
        nullification_message_id=by.message_id,
        withdrawal_bundle_version=record.nullified.withdrawal_version,
    )


def _outcome(result: ReplayResult) -> ReplayOutcome:
    return ReplayOutcome(
        record_id=result.record_id,
        message_id=result.message_id,
        previous_state=result.previous,
        queued=result.requeued,
        bundle_version=result.bundle_version,
        skipped=result.skipped,
    )


@blueprint.get("/api/openapi.json")
def api_document() -> Response:
    return Response(json.dumps(openapi_document(request.host_url), indent=1), mimetype="application/json")


@blueprint.get("/api/me")
def api_me() -> Response:
    identity = g.identity
    token = None if g.get("bearer") else session.get("csrf")
    return _json(Operator(user=signed_in_user(), may_replay=identity.may_replay, csrf_token=token))


@blueprint.get("/api/messages")
def api_search() -> Response:
    try:
        search = read_search(request.args)
    except SearchError as exc:
        abort(400, description=str(exc))
    per_page = _int_arg("per_page", PAGE_SIZE, MAX_PER_PAGE)
    page = _int_arg("page", 1)
    store = console_state().store
    counts = store.count_by_status_matching(search.query)
    total = sum(counts[s] for s in search.statuses) if search.statuses else sum(counts.values())
    pages = max(1, math.ceil(total / per_page))
    rows = store.list_messages(where=search.query, limit=per_page, offset=(page - 1) * per_page)
    return _json(
        SearchPage(
            total=total,
            page=page,
            pages=pages,
            per_page=per_page,
            counts={status.value: n for status, n in counts.items()},
            messages=[MessageSummary(**summary(row)) for row in rows],
        )
    )


@blueprint.get("/api/messages/<record_id>")
def api_message(record_id: str) -> Response:
    store = console_state().store
    record = store.get(record_id)
    if record is None:
        abort(404, description="No stored message has this record id.")
    links = {
        "request": url_for("console.download_request", record_id=record.id, _external=True),
        "cda": url_for("console.download_cda", record_id=record.id, _external=True),
        "page": url_for("console.message", key=record.id, _external=True),
    }
    if record.bundle is not None:
        links["bundle"] = url_for("console.download_bundle", record_id=record.id, _external=True)
    detail = MessageDetail(
        **summary(record),
        service=record.service,
        status_reason=record.status_reason,
        delivered_at=record.delivered_at,
        next_attempt_at=record.next_attempt_at,
        replays=record.replays,
        delivery_attempts=[
            Attempt(
                started_at=a.started_at,
                finished_at=a.finished_at,
                outcome=a.outcome.value if a.outcome else None,
                target=a.target,
                owner=a.owner,
                error=a.error,
                bundle_version=a.bundle_version,
            )
            for a in store.delivery_history(record.id)
        ],
        bundle_versions=[
            BundleVersionInfo(
                version=v.version, converted_at=v.converted_at, superseded_at=v.superseded_at, size=v.size
            )
            for v in store.bundle_versions(record.id)
        ],
        operator_actions=[
            Action(at=a.at, operator=a.operator, action=a.action, detail=a.detail)
            for a in store.operator_actions(record.id)
        ],
        links=links,
    )
    return _json(detail)


@blueprint.post("/api/messages/<record_id>/replay")
def api_replay(record_id: str) -> Response:
    require_replay()
    asked = _body(ReplayRequest, required=False)
    results = replay_records([record_id], asked.mode)
    if not results:
        abort(404, description="No stored message has this record id.")
    return _json(_outcome(results[0]))


@blueprint.post("/api/replay")
def api_replay_selection() -> Response:
    require_replay()
    asked = _body(SelectionReplayRequest, required=True)
    ids = list(dict.fromkeys(asked.record_ids))
    results = replay_records(ids, asked.mode)
    found = {result.record_id for result in results}
    unknown = [i for i in ids if i not in found]
    return _json(SelectionReplayResult(results=[_outcome(r) for r in results], unknown=unknown))


@blueprint.route("/api/<path:unknown>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def api_unknown(unknown: str) -> Response:
    """Any other path under the API (a record id with a ``/`` in it, say): a JSON 404 like the API's others."""
    abort(404, description="No such API path.")
