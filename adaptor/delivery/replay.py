"""The operators' replay (``nhs111 replay`` and the console): deliver stored messages again, in one of two ways.

*Redeliver* (:func:`redeliver`)
    Queue the message with the Bundle it has: the target gets the same bytes, ids, file name, broker message id
    and properties as from every earlier attempt, so a consumer that already has it can drop it.
*Reconvert* (:func:`reconvert`)
    Convert the request as it was received again (after a mapping fix, say) and queue the result as the
    message's next Bundle version, recorded in the store (``bundle_version``, ``converted_at``, and the version
    each later attempt sends). The Bundle it replaces is kept as it was, in the same transaction, for anyone who
    needs to see what was delivered before (:meth:`MessageStore.bundle_versions`, ``nhs111 messages show``, the
    console). The new version keeps the resource ids of the old one (they are drawn from the record id) and is
    marked as a new version at every target (see the README, "Replay"). A message that was rejected at
    acceptance gets its first Bundle this way.

Both reset the attempts, keep the history, and leave alone a message being delivered at this moment.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from adaptor.config import Settings
from adaptor.delivery.conversion import ConversionError, bundle_text, convert
from adaptor.itk.wire import utc_now
from adaptor.store import MessageStore, ReplayResult, replay_refusal
from adaptor.store.claims import UNKNOWN_OPERATOR
from adaptor.store.index import bundle_facts

log = logging.getLogger("adaptor.replay")

#: How the reason of a record that could not be reconverted begins (:attr:`ReplayResult.skipped`).
CONVERSION_FAILED = "conversion failed"


def redeliver(
    store: MessageStore, record_ids: Iterable[str], *, operator: str = UNKNOWN_OPERATOR
) -> list[ReplayResult]:
    """Queue each record again with its stored Bundle (:meth:`MessageStore.replay`), recorded in its history as
    the ``operator``'s. Unknown ids are skipped."""
    return store.replay(record_ids, operator=operator)


def reconvert(
    store: MessageStore, settings: Settings, record_ids: Iterable[str], *, operator: str = UNKNOWN_OPERATOR
) -> list[ReplayResult]:
    """Convert each record's stored request again and queue it as a new Bundle version, keeping the one it
    replaces (its search index takes the new Bundle's facts); recorded in its history as the ``operator``'s. A
    record that still cannot be converted is left as it was, with the reason in its result, and so is a
    nullification or a message its sender withdrew (converting it again would undo the withdrawal), without being
    converted. Unknown ids are skipped."""
    results: list[ReplayResult] = []
    for record_id in record_ids:
        stored = store.get(record_id)
        if stored is None:
            continue
        withdrawal = stored.nullified.withdrawal_version if stored.nullified is not None else None
        refused = replay_refusal(stored.status, stored.nullified is not None, withdrawal, reconverting=True)
        if refused is not None:
            version = stored.bundle_version
            results.append(ReplayResult(record_id, stored.message_id, stored.status, False, version, refused))
            continue
        converted_at = utc_now()
        try:
            bundle = convert(stored.raw or b"", config=settings, now=converted_at, id_seed=record_id)
        except ConversionError as exc:
            log.warning("reconversion failed, message left as it was", extra={"record_id": record_id})
            log.debug("reconversion failure detail", extra={"record_id": record_id, "error": str(exc)})
            skipped = f"{CONVERSION_FAILED}: {exc}"
            results.append(
                ReplayResult(record_id, stored.message_id, stored.status, False, stored.bundle_version, skipped)
            )
            continue
        result = store.replay_reconverted(
            record_id, bundle_text(bundle), converted_at, facts=bundle_facts(bundle), operator=operator
        )
        if result is None:
            continue
        if result.requeued:
            fields = {"record_id": record_id, "message_id": result.message_id, "bundle_version": result.bundle_version}
            log.info("message reconverted", extra=fields)
        results.append(result)
    return results
