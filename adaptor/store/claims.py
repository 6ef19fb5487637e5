"""The outbox's side: claiming due messages (and resent ones for their waiting sender), recording each delivery
attempt, releasing a claim into its next state, and the operators' replay.

Claims are conditional ``UPDATE``\\s checked by row count, so two workers (threads, processes, or replicas sharing a
database) can never both own a message; a lease with an owner and an expiry lets another worker take over the
message of a worker that died.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from adaptor.itk.wire import utc_now
from adaptor.store.accepting import update_index_facts
from adaptor.store.engine import StoreEngine
from adaptor.store.index import stored_bundle_facts
from adaptor.store.records import (
    AttemptOutcome,
    Claim,
    ReplayResult,
    Status,
    StoreError,
    optional_utc,
    optional_without_nul,
)
from adaptor.store.schema import messages, nullified_messages, operator_actions, outbox
from adaptor.store.statements import (
    _CLAIM_DUE,
    _CLAIM_FOR_SENDER,
    _CLOSE_INTERRUPTED,
    _FINISH_ATTEMPT,
    _HOLD_ABANDONED_SYNC,
    _INSERT_ATTEMPT,
    _KEEP_BUNDLE,
    _KEEP_SUPERSEDED,
    _LOAD_CLAIM,
    _LOCK_NEXT_DUE,
    _RELEASE,
    _RENEW_LEASE,
    _SELECT_CLAIM_CANDIDATES,
    _SENDER_STATE,
    _WITH_OUTBOX,
    CLAIM_CANDIDATES,
    CLAIM_ROUNDS,
    _claim_params,
    _not_being_delivered,
    _queue_values,
)

log = logging.getLogger("adaptor.store")  # pinned: the JSON log format names it

#: Who a replay is recorded as when the caller does not say.
UNKNOWN_OPERATOR = "unknown"


class Claims(StoreEngine):
    """Claims, attempts and replays (see :class:`~adaptor.store.MessageStore`)."""

    def claim_for_sender(self, record_id: str, owner: str, lease_seconds: float) -> Claim | Status:
        """Sync mode, a resend of a stored message: claim it for this request unless it is delivered, being
        delivered, or withdrawn by its sender. Returns the :class:`Claim`, or the state that prevented it
        (``delivered``, ``delivering``, or ``nullified`` for a message withdrawn, whatever becomes of its
        withdrawal, and for a nullification)."""
        now = utc_now()
        with self._transaction() as conn:
            result = conn.execute(_CLAIM_FOR_SENDER, _claim_params(record_id, owner, now, lease_seconds))
            if result.rowcount == 1:
                return self._load_claim(conn, record_id, owner, now)
            found = conn.execute(_SENDER_STATE, {"b_record_id": record_id}).first()
        if found is None:
            raise StoreError(f"no stored message with id {record_id}")
        state, nullified = Status(found.state), bool(found.nullified)
        if nullified or state in (Status.NULLIFICATION, Status.UNMATCHED):
            return Status.NULLIFIED
        return state

    # -- the outbox worker -----------------------------------------------------------------------------------

    def claim_due(self, owner: str, lease_seconds: float) -> Claim | None:
        """Claim the message that has been due longest, for ``owner``, for ``lease_seconds``; ``None`` when
        nothing is due.

        A synchronous delivery whose lease expired (its process died while the sender waited) is marked
        ``held`` on the way instead of being claimed: the sender never got OK and will resend.
        """
        if self.is_postgresql:
            return self._claim_due_skip_locked(owner, lease_seconds)
        return self._claim_due_by_row_count(owner, lease_seconds)

    def _claim_due_skip_locked(self, owner: str, lease_seconds: float) -> Claim | None:
        """PostgreSQL: lock the oldest due row that no other transaction has locked, and claim it, in one
        transaction.

        ``SELECT ... FOR UPDATE SKIP LOCKED`` passes over rows other workers are claiming at this moment instead
        of waiting for them, and re-checks the row it locks against the WHERE clause (a row claimed and committed
        meanwhile is no longer due), so workers never take the same message and never queue behind each other.
        The UPDATE keeps the conditions of the portable claim as a second guard.
        """
        for _ in range(CLAIM_CANDIDATES):  # each round claims a message or holds an abandoned synchronous one
            now = utc_now()
            with self._transaction() as conn:
                candidate = conn.execute(_LOCK_NEXT_DUE, {"b_now": now}).first()
                if candidate is None:
                    return None
                record_id = candidate.record_id
                if candidate.state == Status.DELIVERING.value and candidate.synchronous:
                    self._hold_abandoned_sync_in(conn, record_id, now)
                    continue
                claimed = conn.execute(_CLAIM_DUE, _claim_params(record_id, owner, now, lease_seconds))
                if claimed.rowcount == 1:
                    return self._load_claim(conn, record_id, owner, now)
        return None

    def _claim_due_by_row_count(self, owner: str, lease_seconds: float) -> Claim | None:
        """Any database (SQLite): candidates first, outside any transaction; then a conditional UPDATE per
        candidate, checked by row count, decides the race with other workers (SQLite evaluates the WHERE again
        under its write lock, which serialises writers)."""
        for _ in range(CLAIM_ROUNDS):
            now = utc_now()
            with self._reading() as conn:
                candidates = conn.execute(_SELECT_CLAIM_CANDIDATES, {"b_now": now}).all()
            if not candidates:
                return None
            for record_id, state, synchronous in candidates:
                if state == Status.DELIVERING.value and synchronous:
                    self._hold_abandoned_sync(record_id, now)
                    continue
                with self._transaction() as conn:
                    claimed = conn.execute(_CLAIM_DUE, _claim_params(record_id, owner, now, lease_seconds))
                    if claimed.rowcount == 1:
                        return self._load_claim(conn, record_id, owner, now)
            # Every candidate went to other workers (or was held): there may be more due behind them.
        return None

    def _hold_abandoned_sync(self, record_id: str, now: datetime) -> None:
        with self._transaction() as conn:
            self._hold_abandoned_sync_in(conn, record_id, now)

    def _hold_abandoned_sync_in(self, conn: Connection, record_id: str, now: datetime) -> None:
        held = conn.execute(_HOLD_ABANDONED_SYNC, {"b_record_id": record_id, "b_now": now})
        if held.rowcount == 1:
            self._close_interrupted(conn, record_id, now)
            log.warning(
                "synchronous delivery was interrupted; held for the sender's resend", extra={"record_id": record_id}
            )

    def start_attempt(
        self,
        claim: Claim,
        target: str,
        lease_seconds: float,
        bundle_json: str | None,
        converted_at: datetime | None = None,
    ) -> int | None:
        """Just before handing the Bundle to ``target``: renew the lease, keep a newly converted
        ``bundle_json`` as version 1, made at ``converted_at`` (only for a message stored without a Bundle;
        ``None``: the claim's Bundle is sent) and log the attempt as started, with the version of the Bundle it
        sends.

        Returns the attempt id, or ``None`` when the claim is no longer ours (the lease expired and another
        worker took the message): then nothing must be sent.
        """
        now = utc_now()
        with self._transaction() as conn:
            renewed = conn.execute(_RENEW_LEASE, _claim_params(claim.record_id, claim.owner, now, lease_seconds))
            if renewed.rowcount != 1:
                return None
            version = claim.bundle_version
            if bundle_json is not None and claim.bundle is None:
                keep = {"b_record_id": claim.record_id, "b_bundle": bundle_json, "b_now": now}
                conn.execute(_KEEP_BUNDLE, {**keep, "b_converted_at": converted_at or now})
                update_index_facts(conn, claim.record_id, stored_bundle_facts(bundle_json))  # rare: no hot path
                version = 1
            attempt = conn.execute(_INSERT_ATTEMPT, _attempt_row(claim, target, now, bundle_version=version))
            attempt_id = attempt.inserted_primary_key
            assert attempt_id is not None
            return int(attempt_id[0])

    def finish(
        self,
        claim: Claim,
        *,
        state: Status,
        outcome: AttemptOutcome,
        target: str,
        attempt_id: int | None = None,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> bool:
        """Record how the claimed attempt ended and release the claim into ``state``.

        ``attempt_id`` is the id :meth:`start_attempt` returned; ``None`` logs an attempt that ended before
        anything was sent (a conversion failure). ``next_attempt_at`` is when a ``retrying`` message is due.
        The attempt is always recorded; the state only while the claim is still ``claim.owner``'s. Returns
        whether it was (``False``: the lease had expired and another worker owns the message now).
        """
        now = utc_now()
        error = optional_without_nul(error)
        # The outbox row first, then the attempt's: the order a claim taking over the message locks them in
        # (outbox, then its unfinished attempts), so the two can wait for each other but never deadlock.
        release: dict[str, Any] = {
            "b_record_id": claim.record_id,
            "b_owner": claim.owner,
            "b_state": state.value,
            "b_error": error,
            "b_now": now,
        }
        if next_attempt_at is not None:
            release["b_next_attempt_at"] = next_attempt_at
        with self._transaction() as conn:
            delivered = outcome is AttemptOutcome.DELIVERED
            released = conn.execute(_RELEASE[delivered, next_attempt_at is not None], release)
            if attempt_id is None:
                conn.execute(_INSERT_ATTEMPT, _attempt_row(claim, target, now, finished=(outcome, error)))
            else:
                conn.execute(
                    _FINISH_ATTEMPT,
                    {"b_attempt_id": attempt_id, "b_outcome": outcome.value, "b_error": error, "b_now": now},
                )
            return released.rowcount == 1

    def retry_waiting_now(self) -> int:
        """Make every ``retrying`` message due now (the target is back); returns how many."""
        now = utc_now()
        with self._transaction() as conn:
            result = conn.execute(
                update(outbox)
                .where(outbox.c.state == Status.RETRYING.value, outbox.c.next_attempt_at > now)
                .values(next_attempt_at=now, updated_at=now)
            )
        return int(result.rowcount)

    def _load_claim(self, conn: Connection, record_id: str, owner: str, now: datetime) -> Claim:
        """Inside the claiming transaction: close the attempts the previous owner never finished, then read
        what delivering needs."""
        interrupted = self._close_interrupted(conn, record_id, now)
        row = conn.execute(_LOAD_CLAIM, {"b_record_id": record_id}).one()
        withdrawal = row.withdrawal_version is not None and row.withdrawal_version == row.bundle_version
        return Claim(
            record_id=record_id,
            message_id=row.message_id,
            tracking_id=row.tracking_id,
            interaction=row.nullification_interaction if withdrawal else row.interaction,
            ods_codes=tuple(json.loads(row.ods_codes)),
            dos_ids=tuple(json.loads(row.dos_ids)),
            raw=row.raw,
            bundle=row.bundle,
            bundle_version=row.bundle_version,
            converted_at=optional_utc(row.converted_at),
            owner=owner,
            attempt=row.attempts,
            synchronous=bool(row.synchronous),
            interrupted=interrupted,
            withdrawal=withdrawal,
        )

    @staticmethod
    def _close_interrupted(conn: Connection, record_id: str, now: datetime) -> int:
        result = conn.execute(_CLOSE_INTERRUPTED, {"b_record_id": record_id, "b_now": now})
        return int(result.rowcount)

    # -- operators -------------------------------------------------------------------------------------------

    def replay(self, record_ids: Iterable[str], *, operator: str = UNKNOWN_OPERATOR) -> list[ReplayResult]:
        """*Redeliver*: queue each record for delivery again, from the start, with the Bundle it has (the same
        bytes as every earlier attempt): attempts reset, the history kept. A message being delivered right now
        (live lease) is left alone, and so is one without a Bundle to send (rejected at acceptance: reconvert
        it), a nullification (it has nothing of its own to send) and a message its sender withdrew before it was
        delivered (one whose withdrawal was made is queued with it: the withdrawal is sent again). Unknown ids are
        skipped. Each replay is recorded in the message's ``operator_actions``, with the ``operator`` who asked for
        it, in the transaction that queues it."""
        results: list[ReplayResult] = []
        for record_id in record_ids:
            with self._transaction() as conn:
                result = self._requeue(conn, record_id, operator=operator)
            if result is not None:
                results.append(result)
        return results

    def replay_reconverted(
        self,
        record_id: str,
        bundle: str,
        converted_at: datetime,
        *,
        facts: Mapping[str, Any] | None = None,
        operator: str = UNKNOWN_OPERATOR,
    ) -> ReplayResult | None:
        """*Reconvert*: keep ``bundle``, converted again from the stored request at ``converted_at``, as the
        record's next Bundle version (1 for a message that had none) and queue it for delivery as :meth:`replay`
        does, in one transaction, which also keeps the Bundle it replaces in ``bundle_versions`` (see
        :meth:`~adaptor.store.queries.Queries.bundle_versions`), gives the index row the new Bundle's ``facts``
        and records the ``operator``'s action. A message being delivered right now is left alone, its Bundle
        unchanged, and so is a message its sender withdrew (its current Bundle is the withdrawal, or it is never
        to be delivered) or a nullification. ``None`` for an unknown id."""
        with self._transaction() as conn:
            return self._requeue(conn, record_id, bundle, converted_at, facts=facts, operator=operator)

    def _requeue(
        self,
        conn: Connection,
        record_id: str,
        new_bundle: str | None = None,
        converted_at: datetime | None = None,
        *,
        facts: Mapping[str, Any] | None = None,
        operator: str,
    ) -> ReplayResult | None:
        now = utc_now()
        found = conn.execute(
            select(
                messages.c.message_id,
                messages.c.bundle_version,
                messages.c.bundle.is_not(None),
                outbox.c.state,
                nullified_messages.c.record_id.is_not(None),
                nullified_messages.c.withdrawal_version,
            )
            .select_from(_WITH_OUTBOX.outerjoin(nullified_messages, nullified_messages.c.record_id == messages.c.id))
            .where(messages.c.id == record_id)
        ).first()
        if found is None:
            return None
        message_id, version, has_bundle, state, nullified, withdrawal_version = found
        previous = Status(state)
        refused = replay_refusal(previous, nullified, withdrawal_version, reconverting=new_bundle is not None)
        if refused is not None:
            return ReplayResult(record_id, message_id, previous, False, version if has_bundle else None, refused)
        if new_bundle is None and previous is Status.REJECTED:
            return ReplayResult(record_id, message_id, previous, False, None, "no Bundle to redeliver: reconvert it")
        requeued = conn.execute(
            update(outbox)
            .where(outbox.c.record_id == record_id, _not_being_delivered(now))
            .values(**_queue_values(now), last_error=None, replays=outbox.c.replays + 1)
        )
        if requeued.rowcount != 1:
            return ReplayResult(record_id, message_id, previous, False, version, "being delivered right now")
        if new_bundle is not None:
            # The Bundle being replaced may have been delivered: keep it. Its version is read again now that the
            # outbox row is ours: a reconversion that committed while this one waited for the row made a version
            # that must be kept and followed, not given the same number again.
            version = conn.execute(select(messages.c.bundle_version).where(messages.c.id == record_id)).scalar()
            conn.execute(_KEEP_SUPERSEDED, {"b_record_id": record_id, "b_now": now})
            version = (version or 0) + 1
            conn.execute(
                update(messages)
                .where(messages.c.id == record_id)
                .values(bundle=new_bundle, bundle_version=version, converted_at=converted_at or now, updated_at=now)
            )
            if facts is not None:
                update_index_facts(conn, record_id, facts)
        elif not has_bundle:
            version = None  # stored by an adaptor before schema version 2: its first attempt converts it
        action = "redeliver" if new_bundle is None else "reconvert"
        detail = f"was {previous.value}" + (f"; Bundle version {version}" if version is not None else "")
        conn.execute(
            insert(operator_actions).values(
                message_record_id=record_id, at=now, operator=operator[:200], action=action, detail=detail
            )
        )
        return ReplayResult(record_id, message_id, previous, True, version)


def replay_refusal(state: Status, nullified: bool, withdrawal_version: int | None, *, reconverting: bool) -> str | None:
    """Why a replay (``reconverting`` or redelivering) leaves a nullification or a message its sender withdrew
    alone; ``None`` when it may be queued."""
    if state in (Status.NULLIFICATION, Status.UNMATCHED):
        return "a nullification has nothing of its own to deliver (its withdrawals are the withdrawn messages')"
    if not nullified:
        return None
    if withdrawal_version is None:
        return "withdrawn by its sender before it was delivered: it is never delivered"
    if reconverting:
        return "withdrawn by its sender: its current Bundle is the withdrawal, which redelivering sends again"
    return None


def _attempt_row(
    claim: Claim,
    target: str,
    now: datetime,
    finished: tuple[AttemptOutcome, str | None] | None = None,
    *,
    bundle_version: int | None = None,
) -> dict[str, Any]:
    """A ``delivery_attempts`` row started ``now``, sending version ``bundle_version`` of the Bundle: in
    progress, or ``finished`` at once with (outcome, error)."""
    outcome, error = finished if finished is not None else (None, None)
    return {
        "message_record_id": claim.record_id,
        "owner": claim.owner,
        "target": target,
        "started_at": now,
        "finished_at": None if finished is None else now,
        "outcome": None if outcome is None else outcome.value,
        "error": error,
        "bundle_version": bundle_version,
    }
