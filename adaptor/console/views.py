"""The console's pages: server-rendered, usable without JavaScript.

Pages read the store: the message list and its search (:mod:`.search`), a message with its patient banner and
downloads, a Bundle version, the rejections. The replay pages and forms are in :mod:`.replay`, the JSON API in
:mod:`.api`. Nothing here converts, delivers or edits a message (the Bundle preview of a message without one is
converted for display only).

Each view is a route on :data:`adaptor.console.access.blueprint`, which signs requests in and checks them before
any view runs. Importing this module adds the routes (:mod:`adaptor.console` imports it, and :mod:`.replay` and
:mod:`.api`, before it registers the blueprint).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from flask import Response, abort, render_template, request
from lxml import etree
from werkzeug.wrappers import Response as BaseResponse

from adaptor.console.access import blueprint, see_other
from adaptor.console.cda_text import readable_document
from adaptor.console.search import Search, SearchError, read_search
from adaptor.console.state import console_state
from adaptor.delivery.conversion import ConversionError, convert, read_request
from adaptor.store import MessageQuery, Status, StoredMessage, StoredNullification, versions_not_kept

#: The console blueprint, with these routes added to those of :mod:`.access`.
__all__ = ["blueprint"]

PAGE_SIZE = 25
RECENT_REJECTIONS = 5


# -- pages -----------------------------------------------------------------------------------------------------


@blueprint.get("/")
def home() -> BaseResponse:
    return see_other("console.messages")


@blueprint.get("/messages")
def messages() -> Response:
    store = console_state().store
    problem = None
    try:
        search = read_search(request.args)
    except SearchError as exc:
        search, problem = Search(MessageQuery()), str(exc)
    counts = store.count_by_status_matching(search.query)  # the state tabs follow the search
    total = sum(counts[s] for s in search.statuses) if search.statuses else sum(counts.values())
    page, pages = page_of(total)
    rows = store.list_messages(where=search.query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    overall = store.count_by_status() if search.narrowed else counts
    rejected = store.count_rejections()  # every fault answered, E3 (a stored rejected message) included
    stored = sum(overall.values())
    accepted = stored - overall[Status.REJECTED]
    counters = {
        "received": accepted + rejected,
        "stored": stored,
        "accepted": accepted,
        "rejected": rejected,
        "delivered": overall[Status.DELIVERED],
        "dead_letter": overall[Status.DEAD_LETTER],
    }
    page_html = render_template(
        "messages.html",
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        search=search,
        problem=problem,
        counts=counts,
        matching=sum(counts.values()),
        counters=counters,
        rejections=store.list_rejections(limit=RECENT_REJECTIONS),
    )
    return Response(page_html, status=400 if problem else 200)


@blueprint.get("/messages/<key>")
def message(key: str) -> BaseResponse | str:
    found = _find(key)
    if len(found) > 1:
        return render_template("choose.html", key=key, records=found)
    record = found[0]
    store = console_state().store
    versions = store.bundle_versions(record.id)
    nullification = store.nullification(record.id)
    return render_template(
        "message.html",
        message=record,
        index=record.index,
        history=store.delivery_history(record.id),
        actions=store.operator_actions(record.id),
        document=readable_document(record.raw or b""),
        bundle=_bundle_view(record, nullification),
        versions=versions,
        kept_versions={v.version for v in versions},
        lost_versions=versions_not_kept(versions),
        replay_modes=_replay_actions(record),
        nullification=nullification,
        withdrawn=store.withdrawn_by(nullification) if nullification is not None else [],
    )


@blueprint.get("/messages/<record_id>/request.xml")
def download_request(record_id: str) -> Response:
    """The request exactly as received."""
    record = record_or_404(record_id)
    return _download(record.raw or b"", "application/xml", f"{record.id}-request.xml")


@blueprint.get("/messages/<record_id>/cda.xml")
def download_cda(record_id: str) -> Response:
    """The ClinicalDocument the Bundle was made from (the newest of a repeat caller's set), as XML."""
    record = record_or_404(record_id)
    try:
        document, _ = read_request(record.raw or b"")
    except ConversionError as exc:
        abort(404, description=f"The request's clinical document cannot be read: {exc}")
    xml = etree.tostring(document, xml_declaration=True, encoding="UTF-8")
    return _download(xml, "application/xml", f"{record.id}-cda.xml")


@blueprint.get("/messages/<record_id>/bundle.json")
def download_bundle(record_id: str) -> Response:
    """The current Bundle exactly as stored and delivered."""
    record = record_or_404(record_id)
    if record.bundle is None:
        abort(404, description="This message has no Bundle (it was rejected, or stored before Bundles were kept).")
    filename = f"{record.id}-bundle-v{record.bundle_version}.json"
    return _download(record.bundle.encode("utf-8"), "application/fhir+json", filename)


@blueprint.get("/messages/<record_id>/bundles/<int:version>")
def bundle_version(record_id: str, version: int) -> str:
    """One version of a message's Bundle, read-only: the current one or one a reconversion replaced, as it was
    stored and delivered (shown pretty-printed, with the size and SHA-256 of the bytes sent), and the attempts
    that sent it."""
    store = console_state().store
    record = record_or_404(record_id)
    chosen = next((v for v in store.bundle_versions(record_id) if v.version == version), None)
    if chosen is None:
        abort(404, description="This message has no kept Bundle of this version.")
    return render_template(
        "bundle.html",
        message=record,
        version=chosen,
        sha256=hashlib.sha256(chosen.bundle.encode("utf-8")).hexdigest(),
        bundle=_stored_bundle_text(chosen.bundle),
        attempts=[a for a in store.delivery_history(record_id) if a.bundle_version == version],
    )


@blueprint.get("/rejections")
def rejections() -> str:
    store = console_state().store
    total = store.count_rejections()
    page, pages = page_of(total)
    rows = store.list_rejections(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render_template("rejections.html", rows=rows, total=total, page=page, pages=pages)


# -- helpers ---------------------------------------------------------------------------------------------------


def record_or_404(record_id: str) -> StoredMessage:
    """The record with this id (in full); 404 when there is none."""
    record = console_state().store.get(record_id)
    if record is None:
        abort(404, description="No stored message has this record id.")
    return record


def _download(body: bytes, mimetype: str, filename: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _find(key: str) -> list[StoredMessage]:
    """The record with this id, else every record with this MessageID; 404 when there is none."""
    store = console_state().store
    record = store.get(key)
    found = [record] if record is not None else store.find_by_message_id(key)
    if not found:
        abort(404, description="No stored message has this record id or MessageID.")
    return found


def _replay_actions(record: StoredMessage) -> tuple[str, ...]:
    """The replay buttons a message gets: none while it is being delivered, for a nullification (nothing of its
    own to deliver) and for a message withdrawn before it was delivered; only *redeliver* for a withdrawn one
    (its Bundle is the withdrawal) and only *reconvert* for a rejected one."""
    if record.status in (Status.DELIVERING, Status.NULLIFICATION, Status.UNMATCHED):
        return ()
    if record.nullified is not None:
        return ("redeliver",) if record.nullified.withdrawal_version is not None else ()
    if record.status is Status.REJECTED:
        return ("reconvert",)
    return ("redeliver", "reconvert")


def _bundle_view(record: StoredMessage, nullification: StoredNullification | None = None) -> dict[str, str | None]:
    """The stored Bundle pretty-printed; for a message without one (rejected at acceptance, or stored by an
    adaptor before schema version 2) a preview converted now, said to be one; none for a nullification."""
    if record.bundle is not None:
        return _stored_bundle_text(record.bundle)
    if nullification is not None:
        return {
            "text": None,
            "note": "A nullification has no Bundle of its own: each message it withdraws that had been delivered "
            "gets its withdrawal as its next Bundle version (see the messages it withdraws above).",
        }
    try:
        preview = convert(record.raw or b"", config=console_state().settings.replace(validate_fhir=False))
    except ConversionError as exc:
        return {"text": None, "note": f"The request cannot be converted: {exc}"}
    return {
        "text": _pretty(preview),
        "note": "Preview: this message has no stored Bundle (it was rejected, or stored before Bundles were kept "
        "at acceptance); this is what converting it now gives, with other ids and times.",
    }


def _stored_bundle_text(bundle: str) -> dict[str, str | None]:
    """A stored Bundle pretty-printed, or as stored when it is not JSON (said so)."""
    try:
        return {"text": _pretty(json.loads(bundle)), "note": None}
    except ValueError:
        return {"text": bundle, "note": "The stored Bundle is not valid JSON; shown as stored."}


def _pretty(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False)


def page_of(total: int) -> tuple[int, int]:
    """The page asked for (``?page=``, 1 when absent or not a number, at most the last), and how many pages
    ``total`` rows fill."""
    pages = max(1, math.ceil(total / PAGE_SIZE))
    try:
        asked = int(request.args.get("page", "1"))
    except ValueError:
        asked = 1
    return min(max(1, asked), pages), pages
