"""Replay from the console: one message or a selection, always through a page that says what will happen.

A replay queues messages again, redelivering the stored Bundle or reconverting the request into a new Bundle
version (:mod:`adaptor.delivery.replay`, as ``nhs111 replay``), and wakes the outbox workers. The message page and
the list's selection lead to a confirmation page (a GET, which changes nothing) naming the messages and what
each way does; only its form, posted with ``confirmed``, replays. Each replay is recorded in the message's
history with the operator's name (:meth:`adaptor.store.MessageStore.operator_actions`). An operator who may only
read (``PEM111_CONSOLE_READ_ONLY_USERS``) gets 403 from all of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flask import abort, flash, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from adaptor.console.access import STATUS_LABELS, blueprint, require_replay, see_other, signed_in_user
from adaptor.console.state import console_state
from adaptor.console.views import record_or_404
from adaptor.delivery.replay import reconvert, redeliver
from adaptor.store import ReplayResult, Status, StoredMessage

log = logging.getLogger("adaptor.console")

#: The two ways of replaying (see the README, "Replay").
MODES = ("redeliver", "reconvert")
#: The most messages one bulk replay takes (the list shows 25 a page; the dead letters may be more).
MAX_SELECTED = 500


def replay_records(record_ids: Iterable[str], mode: str) -> list[ReplayResult]:
    """Replay the records (unknown ids skipped) in ``mode`` as the signed-in operator, log each queued one
    (identifiers only) and wake the workers. The caller has checked the operator's role (:func:`require_replay`)."""
    console = console_state()
    operator = signed_in_user()
    if mode == "reconvert":
        results = reconvert(console.store, console.settings, record_ids, operator=operator)
    else:
        results = redeliver(console.store, record_ids, operator=operator)
    for result in results:
        if result.requeued:
            log.info(
                "console: message replayed",
                extra={
                    "user": operator,
                    "record_id": result.record_id,
                    "message_id": result.message_id,
                    "previous_status": result.previous.value,
                    "mode": mode,
                    "bundle_version": result.bundle_version,
                },
            )
    if any(result.requeued for result in results):
        console.wake()
    return results


def mode_of(value: str | None) -> str:
    mode = value or "redeliver"
    if mode not in MODES:
        abort(400, description="Replay is redeliver or reconvert.")
    return mode


# -- one message -----------------------------------------------------------------------------------------------


@blueprint.get("/messages/<record_id>/replay")
def confirm_replay(record_id: str) -> str:
    """What replaying this message will do, and the form that does it."""
    require_replay()
    record = record_or_404(record_id)
    mode = mode_of(request.args.get("mode"))
    if mode == "redeliver" and record.status is Status.REJECTED:
        mode = "reconvert"  # a rejected message has no Bundle to redeliver
    return render_template("confirm.html", message=record, mode=mode, index=record.index)


@blueprint.post("/messages/<record_id>/replay")
def replay_message(record_id: str) -> BaseResponse:
    require_replay()
    mode = mode_of(request.form.get("mode"))
    if request.form.get("confirmed") != "yes":  # not from the confirmation page: show it, do nothing
        return see_other("console.confirm_replay", record_id=record_id, mode=mode)
    results = replay_records([record_id], mode)
    if not results:
        abort(404, description="No stored message has this record id.")
    [result] = results
    if result.requeued:
        previous = STATUS_LABELS[result.previous].lower()
        if mode == "reconvert":
            what = f"Reconverted as Bundle version {result.bundle_version} and queued for delivery (it was {previous})."
        else:
            what = f"Queued for delivery again (it was {previous}), with the same Bundle."
        flash(what, "success")
    else:
        flash(f"Not queued: {result.skipped or 'the message is being delivered right now'}.", "error")
    return see_other("console.message", key=record_id)


# -- a selection -----------------------------------------------------------------------------------------------


@blueprint.get("/replay")
def confirm_selection() -> str | BaseResponse:
    """The selected messages (``record``, repeated: the list's tick boxes), or every dead letter
    (``dead_letters=1``), and the form that replays them."""
    require_replay()
    store = console_state().store
    ids = list(dict.fromkeys(request.args.getlist("record")))
    if request.args.get("dead_letters") == "1":
        ids += [i for i in store.record_ids(Status.DEAD_LETTER) if i not in ids]
    if not ids:
        flash("No message was selected: tick the messages to replay in the list first.", "info")
        return see_other("console.messages")
    if len(ids) > MAX_SELECTED:
        abort(400, description=f"At most {MAX_SELECTED} messages can be replayed at once.")
    records = [r for r in (store.get(i) for i in ids) if r is not None]
    if not records:
        abort(404, description="None of the selected messages is stored.")
    mode = mode_of(request.args.get("mode"))
    return render_template("confirm_many.html", records=records, mode=mode, rejected=_rejected(records))


@blueprint.post("/replay")
def replay_selection() -> BaseResponse:
    require_replay()
    mode = mode_of(request.form.get("mode"))
    ids = list(dict.fromkeys(request.form.getlist("record")))[:MAX_SELECTED]
    if request.form.get("confirmed") != "yes" or not ids:
        abort(400, description="Choose the messages and confirm on the confirmation page.")
    results = replay_records(ids, mode)
    queued = sum(1 for result in results if result.requeued)
    skipped = [result for result in results if not result.requeued]
    flash(f"{queued} message(s) queued for delivery again ({mode}).", "success" if queued else "info")
    if skipped:
        reasons = "; ".join(f"{r.message_id}: {r.skipped or 'being delivered'}" for r in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        flash(f"{len(skipped)} not queued ({reasons}{more}).", "error")
    return see_other("console.messages")


def _rejected(records: list[StoredMessage]) -> int:
    return sum(1 for r in records if r.status is Status.REJECTED)
