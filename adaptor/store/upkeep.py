"""Keeping the store: the search index filled for messages stored before it existed (``nhs111 db reindex``), and
retention, which purges delivered messages and rejections once they are older than the settings allow
(``nhs111 db purge``, and on a schedule in ``nhs111 serve``).

Retention never touches a message that is not delivered: pending, delivering, retrying, held, dead-lettered and
rejected messages (and any state added later) are kept whatever their age, because only ``delivered`` is
selected. A purged message goes with everything that refers to it: its delivery attempts, kept Bundle versions,
index row, operators' actions and outbox row, in one transaction per batch.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, delete, func, or_, select
from sqlalchemy.engine import Connection, Row

from adaptor.config import Settings
from adaptor.itk.wire import as_utc, utc_now
from adaptor.store.engine import StoreEngine
from adaptor.store.index import INDEX_VERSION, envelope_facts, index_row, stored_bundle_facts
from adaptor.store.records import Status, StoreError, optional_utc
from adaptor.store.schema import (
    bundle_versions,
    delivery_attempts,
    message_index,
    messages,
    operator_actions,
    outbox,
    rejections,
)
from adaptor.store.statements import _WITH_OUTBOX

log = logging.getLogger("adaptor.store")

#: Rows read, converted or deleted per transaction: short transactions, so the adaptor keeps running beside.
BATCH = 500

#: The tables that refer to a message, deleted before it (their foreign keys), then ``messages`` itself.
_DEPENDENTS = (delivery_attempts, bundle_versions, message_index, operator_actions)


@dataclass(frozen=True)
class RetentionPolicy:
    """What retention selects: delivered messages delivered before ``delivered_before`` and rejections made
    before ``rejections_before``; ``None`` keeps that kind for ever."""

    delivered_before: datetime | None
    rejections_before: datetime | None

    @classmethod
    def from_settings(cls, settings: Settings, now: datetime | None = None) -> RetentionPolicy:
        """The cut-offs of ``PEM111_RETENTION_DELIVERED_DAYS`` and ``PEM111_RETENTION_REJECTIONS_DAYS`` at
        ``now`` (0 days: kept for ever)."""
        now = now or utc_now()

        def before(days: int) -> datetime | None:
            return now - timedelta(days=days) if days > 0 else None

        return cls(before(settings.retention_delivered_days), before(settings.retention_rejections_days))

    @property
    def keeps_everything(self) -> bool:
        return self.delivered_before is None and self.rejections_before is None


@dataclass(frozen=True)
class PurgeableMessage:
    record_id: str
    message_id: str
    received_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True)
class PurgeableRejection:
    id: int
    rejected_at: datetime
    rule: str
    error_code: int
    message_id: str | None


@dataclass(frozen=True)
class PurgeResult:
    messages: int
    rejections: int


class Upkeep(StoreEngine):
    """Reindexing and retention (see :class:`~adaptor.store.MessageStore`)."""

    # -- the search index ------------------------------------------------------------------------------------

    def reindex(self, *, everything: bool = False, progress: Callable[[int], None] | None = None) -> int:
        """Fill the search index from the stored Bundles: every message whose row is missing (stored by an
        earlier release) or was filled by an older extractor (``indexed`` below
        :data:`~adaptor.store.index.INDEX_VERSION`, such as the identifiers-only rows of migration step 4); with
        ``everything``, every message. In batches of :data:`BATCH`, each its own transaction; the warnings a row
        had are kept. ``progress`` is called with the count so far after each batch. Returns how many rows were
        written."""
        done, after = 0, ""
        while True:
            query = (
                select(
                    messages.c.id,
                    messages.c.message_id,
                    messages.c.tracking_id,
                    messages.c.sender,
                    messages.c.ods_codes,
                    messages.c.dos_ids,
                    messages.c.received_at,
                    messages.c.bundle,
                    message_index.c.warnings,
                )
                .select_from(messages.outerjoin(message_index, message_index.c.record_id == messages.c.id))
                .where(messages.c.id > after)
                .order_by(messages.c.id)
                .limit(BATCH)
            )
            if not everything:
                query = query.where(or_(message_index.c.record_id.is_(None), message_index.c.indexed < INDEX_VERSION))
            with self._reading() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return done
            written = [_reindexed_row(row) for row in rows]  # type: ignore[arg-type]
            with self._transaction() as conn:
                ids = [row["record_id"] for row in written]
                conn.execute(delete(message_index).where(message_index.c.record_id.in_(ids)))
                conn.execute(message_index.insert(), written)
            done += len(written)
            after = rows[-1].id
            if progress is not None:
                progress(done)

    def unindexed_count(self) -> int:
        """How many messages ``nhs111 db reindex`` would fill (no row, or an older extractor's)."""
        query = (
            select(func.count())
            .select_from(messages.outerjoin(message_index, message_index.c.record_id == messages.c.id))
            .where(or_(message_index.c.record_id.is_(None), message_index.c.indexed < INDEX_VERSION))
        )
        with self._reading() as conn:
            return int(conn.execute(query).scalar_one())

    # -- retention -------------------------------------------------------------------------------------------

    def purgeable_messages(self, policy: RetentionPolicy) -> Iterator[PurgeableMessage]:
        """The delivered messages ``policy`` selects, by record id, read in batches (``nhs111 db purge`` lists
        them in a dry run; :meth:`purge` deletes exactly these)."""
        if policy.delivered_before is None:
            return
        after = ""
        while True:
            query = (
                select(messages.c.id, messages.c.message_id, messages.c.received_at, outbox.c.delivered_at)
                .select_from(_WITH_OUTBOX)
                .where(_delivered_before(policy.delivered_before), messages.c.id > after)
                .order_by(messages.c.id)
                .limit(BATCH)
            )
            with self._reading() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield PurgeableMessage(row.id, row.message_id, as_utc(row.received_at), optional_utc(row.delivered_at))
            if len(rows) < BATCH:
                return
            after = rows[-1].id

    def purgeable_rejections(self, policy: RetentionPolicy) -> Iterator[PurgeableRejection]:
        """The rejections ``policy`` selects, oldest first, read in batches."""
        if policy.rejections_before is None:
            return
        after = 0
        while True:
            query = (
                select(rejections)
                .where(rejections.c.rejected_at < policy.rejections_before, rejections.c.id > after)
                .order_by(rejections.c.id)
                .limit(BATCH)
            )
            with self._reading() as conn:
                rows = conn.execute(query).all()
            for row in rows:
                yield PurgeableRejection(row.id, as_utc(row.rejected_at), row.rule, row.error_code, row.message_id)
            if len(rows) < BATCH:
                return
            after = rows[-1].id

    def purge(self, policy: RetentionPolicy) -> PurgeResult:
        """Delete what ``policy`` selects, in batches of :data:`BATCH` (one transaction each): delivered messages
        with every row that refers to them, and rejections. A message is deleted only if it is still delivered
        (and was delivered before the cut-off) in the transaction that deletes it: on PostgreSQL its outbox row is
        locked first, so a replay at the same moment either comes first (and the message is kept) or waits and
        finds it gone."""
        purged_messages = purged_rejections = 0
        if policy.delivered_before is not None:
            while True:
                with self._transaction() as conn:
                    count = _purge_delivered_batch(conn, policy.delivered_before)
                purged_messages += count
                if count < BATCH:
                    break
        if policy.rejections_before is not None:
            while True:
                with self._transaction() as conn:
                    ids = list(
                        conn.execute(
                            select(rejections.c.id)
                            .where(rejections.c.rejected_at < policy.rejections_before)
                            .order_by(rejections.c.id)
                            .limit(BATCH)
                        ).scalars()
                    )
                    if ids:
                        conn.execute(delete(rejections).where(rejections.c.id.in_(ids)))
                purged_rejections += len(ids)
                if len(ids) < BATCH:
                    break
        return PurgeResult(purged_messages, purged_rejections)


def _delivered_before(cutoff: datetime) -> ColumnElement[bool]:
    """Retention's only selection of messages: delivered, before ``cutoff``. No other state is ever purged."""
    return and_(outbox.c.state == Status.DELIVERED.value, outbox.c.delivered_at < cutoff)


def _purge_delivered_batch(conn: Connection, cutoff: datetime) -> int:
    ids = list(
        conn.execute(
            select(outbox.c.record_id)
            .where(_delivered_before(cutoff))
            .order_by(outbox.c.record_id)
            .limit(BATCH)
            .with_for_update()
        ).scalars()
    )
    if not ids:
        return 0
    for table in _DEPENDENTS:
        conn.execute(delete(table).where(table.c[_record_column(table)].in_(ids)))
    conn.execute(delete(outbox).where(outbox.c.record_id.in_(ids)))
    conn.execute(delete(messages).where(messages.c.id.in_(ids)))
    return len(ids)


def _record_column(table: Table) -> str:
    return "record_id" if table is message_index else "message_record_id"


def _reindexed_row(row: Row[Any]) -> dict[str, Any]:
    envelope = envelope_facts(
        record_id=row.id,
        message_id=row.message_id,
        tracking_id=row.tracking_id,
        sender=row.sender,
        ods_codes=json.loads(row.ods_codes),
        dos_ids=json.loads(row.dos_ids),
    )
    fresh = index_row(envelope, as_utc(row.received_at), stored_bundle_facts(row.bundle))
    fresh["warnings"] = row.warnings  # what validation warned about is not in the Bundle: kept as it was
    return fresh


class RetentionSchedule:
    """``nhs111 serve``'s purge every ``PEM111_RETENTION_PURGE_INTERVAL_HOURS`` (the first one an interval after
    start), in a daemon thread; a failed purge is logged and tried again at the next interval. Counts only are
    logged: never what was purged."""

    def __init__(self, store: Upkeep, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval_seconds(self) -> float:
        return self._settings.retention_purge_interval_hours * 3600

    def start(self) -> None:
        if self.interval_seconds <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="nhs111-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_once(self) -> PurgeResult | None:
        """One purge with the cut-offs as of now; ``None`` when the settings keep everything or it failed."""
        policy = RetentionPolicy.from_settings(self._settings)
        if policy.keeps_everything:
            return None
        try:
            result = self._store.purge(policy)
        except StoreError as exc:
            log.error("retention purge failed; trying again at the next interval", extra={"error": str(exc)})
            return None
        log.info(
            "retention purge done",
            extra={"purged_messages": result.messages, "purged_rejections": result.rejections},
        )
        return result

    def _run(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            self.run_once()
