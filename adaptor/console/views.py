"""The console's pages and forms: server-rendered, usable without JavaScript.

Data flows one way: pages read the store; the replay forms queue messages again, redelivering the stored Bundle
or reconverting the request into a new Bundle version (:mod:`adaptor.delivery.replay`, as ``nhs111 replay``), and
wake the outbox workers. Nothing else here converts, delivers or edits a message (the Bundle preview of a message
without one is converted for display only).

Each view is a route on :data:`adaptor.console.access.blueprint`, which signs requests in and checks them before
any view runs. Importing this module adds the routes, so :mod:`adaptor.console` registers the blueprint from here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any

from flask import abort, flash, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from adaptor.console.access import STATUS_LABELS, blueprint, see_other, signed_in_user
from adaptor.console.cda_text import readable_document
from adaptor.console.state import console_state
from adaptor.delivery.conversion import ConversionError, convert
from adaptor.delivery.replay import reconvert, redeliver
from adaptor.store import MessageQuery, Status, StoredMessage, StoredNullification, versions_not_kept

#: The console blueprint, with these routes added to those of :mod:`.access`.
__all__ = ["blueprint"]

log = logging.getLogger("adaptor.console")

PAGE_SIZE = 25
RECENT_REJECTIONS = 5
#: The longest search text used (MessageIDs and trackingids are UUIDs; ODS codes are shorter still).
MAX_SEARCH = 200


# -- pages -----------------------------------------------------------------------------------------------------


@blueprint.get("/")
def home() -> BaseResponse:
    return see_other("console.messages")


@blueprint.get("/messages")
def messages() -> str:
    store = console_state().store
    status_value = request.args.get("status", "")
    status = Status(status_value) if status_value in {s.value for s in Status} else None
    search = request.args.get("q", "").strip()[:MAX_SEARCH]
    where = MessageQuery(statuses=(status,) if status else (), search=search or None)
    total = store.count_messages(where)
    page, pages = _page_of(total)
    rows = store.list_messages(where=where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    counts = store.count_by_status()
    rejected = store.count_rejections()  # every fault answered, E3 (a stored rejected message) included
    stored = sum(counts.values())
    accepted = stored - counts[Status.REJECTED]
    counters = {
        "received": accepted + rejected,
        "stored": stored,
        "accepted": accepted,
        "rejected": rejected,
        "delivered": counts[Status.DELIVERED],
        "dead_letter": counts[Status.DEAD_LETTER],
    }
    return render_template(
        "messages.html",
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        status=status,
        search=search,
        counts=counts,
        counters=counters,
        rejections=store.list_rejections(limit=RECENT_REJECTIONS),
    )


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
        history=store.delivery_history(record.id),
        document=readable_document(record.raw or b""),
        bundle=_bundle_view(record, nullification),
        versions=versions,
        kept_versions={v.version for v in versions},
        lost_versions=versions_not_kept(versions),
        actions=_replay_actions(record),
        nullification=nullification,
        withdrawn=store.withdrawn_by(nullification) if nullification is not None else [],
    )


@blueprint.get("/messages/<record_id>/bundles/<int:version>")
def bundle_version(record_id: str, version: int) -> str:
    """One version of a message's Bundle, read-only: the current one or one a reconversion replaced, as it was
    stored and delivered (shown pretty-printed, with the size and SHA-256 of the bytes sent), and the attempts
    that sent it."""
    store = console_state().store
    record = store.get(record_id)
    if record is None:
        abort(404, description="No stored message has this record id.")
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
    page, pages = _page_of(total)
    rows = store.list_rejections(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return render_template("rejections.html", rows=rows, total=total, page=page, pages=pages)


# -- actions ---------------------------------------------------------------------------------------------------


@blueprint.post("/messages/<record_id>/replay")
def replay_message(record_id: str) -> BaseResponse:
    console = console_state()
    mode = request.form.get("mode", "redeliver")
    if mode not in ("redeliver", "reconvert"):
        abort(400, description="Replay is redeliver or reconvert.")
    if mode == "reconvert":
        results = reconvert(console.store, console.settings, [record_id])
    else:
        results = redeliver(console.store, [record_id])
    if not results:
        abort(404, description="No stored message has this record id.")
    [result] = results
    if result.requeued:
        log.info(
            "console: message replayed",
            extra={
                "user": signed_in_user(),
                "record_id": record_id,
                "message_id": result.message_id,
                "previous_status": result.previous.value,
                "mode": mode,
                "bundle_version": result.bundle_version,
            },
        )
        console.wake()
        previous = STATUS_LABELS[result.previous].lower()
        if mode == "reconvert":
            what = f"Reconverted as Bundle version {result.bundle_version} and queued for delivery (it was {previous})."
        else:
            what = f"Queued for delivery again (it was {previous}), with the same Bundle."
        flash(what, "success")
    else:
        flash(f"Not queued: {result.skipped or 'the message is being delivered right now'}.", "error")
    return see_other("console.message", key=record_id)


@blueprint.post("/dead-letters/replay")
def replay_dead_letters() -> BaseResponse:
    console = console_state()
    results = redeliver(console.store, console.store.record_ids(Status.DEAD_LETTER))
    queued = sum(1 for result in results if result.requeued)
    log.info("console: dead-lettered messages replayed", extra={"user": signed_in_user(), "count": queued})
    if queued:
        console.wake()
    flash(f"{queued} dead-lettered message(s) queued for delivery again.", "success" if queued else "info")
    return see_other("console.messages")


# -- helpers ---------------------------------------------------------------------------------------------------


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


def _page_of(total: int) -> tuple[int, int]:
    """The page asked for (``?page=``, 1 when absent or not a number, at most the last), and how many pages
    ``total`` rows fill."""
    pages = max(1, math.ceil(total / PAGE_SIZE))
    try:
        asked = int(request.args.get("page", "1"))
    except ValueError:
        asked = 1
    return min(max(1, asked), pages), pages
