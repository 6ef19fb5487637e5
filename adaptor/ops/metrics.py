"""Prometheus metrics, served at ``GET /metrics`` by :mod:`adaptor.http.app`.

Each application (:func:`adaptor.http.app.create_app`) owns one :class:`Metrics` with its own registry, never
prometheus_client's global one, so that tests and several applications in one process do not add to each
other's counts.

Counters and histograms are this process's own, counted since it started: with several replicas each reports
what it handled, and Prometheus adds them up (``sum without (instance) (...)``). The outbox gauges are read from
the store at scrape time, so every replica sharing a database reports the same outbox: aggregate those with
``max``, not ``sum``. ``nhs111 worker`` serves no HTTP, so the deliveries it makes are not counted anywhere (its
effect shows in the outbox gauges); run the delivery threads inside ``nhs111 serve`` to count them.

Label values come only from small fixed sets: never a MessageID, trackingid, NHS number, ODS code or URL.

=============================================  ===============================================================
``nhs111_requests_total``                      ITK POSTs answered, by ``outcome`` (``ok``, ``fault``, or
                                               ``refused``: an HTTP error such as 415 instead of a SOAP answer),
                                               ``error_code`` (``1000``, ``2100``, ``2200``, ``3000``; ``none``
                                               for ok) and ``rule`` (``C17``... ; ``none``)
``nhs111_request_duration_seconds``            histogram of the time to answer an ITK POST, by ``outcome``
``nhs111_messages_accepted_total``             new messages stored (an identical resend is not counted here)
``nhs111_resends_total``                       identical resends of a stored message, answered without storing
``nhs111_messages_delivered_total``            messages the target accepted, by ``target`` (``dir``, ``amqp``,
                                               ``http``)
``nhs111_delivery_retries_total``              failed attempts that leave the message to be tried again
                                               (backoff; in sync mode, held for the sender's resend), by
                                               ``target``
``nhs111_dead_letters_total``                  messages dead-lettered, by ``reason`` (``conversion_failed``,
                                               ``refused``, ``out_of_attempts``)
``nhs111_conversion_duration_seconds``         histogram of CDA to FHIR conversion time
``nhs111_nullifications_total``                new nullifications stored (nullification.md), by ``effect``:
                                               ``withdrew`` (it withdrew stored messages), ``repeated`` (they
                                               were withdrawn already) or ``unmatched`` (none is stored)
``nhs111_messages_nullified_total``            stored messages withdrawn by their sender, by ``withdrawal``:
                                               ``queued`` (it had been sent: its withdrawal is delivered) or
                                               ``none`` (never delivered; also a message arriving after its
                                               nullification)
``nhs111_outbox_depth``                        messages not yet delivered nor dead-lettered (pending,
                                               delivering, retrying, held), from the store
``nhs111_outbox_oldest_age_seconds``           how long the oldest of those has been waiting since it was
                                               received (0 when there is none)
``nhs111_outbox_messages``                     the same by ``state``, and ``dead_letter`` and ``rejected``: the
                                               dead letters and the messages rejected at acceptance (rule E3)
                                               in the store now (a replay takes them out); ``nullified``
                                               (withdrawn by their sender, withdrawal delivered if one was
                                               needed) and ``unmatched`` (nullifications whose message is not
                                               stored: alert on it)
``nhs111_store_up``                            1 when the outbox gauges could be read at this scrape, else 0
``process_*``                                  CPU, memory, open files (prometheus_client's process collector)
=============================================  ===============================================================
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from adaptor.itk.faults import ItkFault
from adaptor.itk.wire import as_utc, utc_now
from adaptor.store import MessageStore, Status, StoreError, messages, outbox

log = logging.getLogger("adaptor.metrics")  # pinned: the JSON log format names it

#: The classic text format, which every Prometheus version reads.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

#: Label values: the fixed sets every label is drawn from (anything else becomes ``other``).
OUTCOMES = ("ok", "fault", "refused")
ERROR_CODES = ("1000", "2100", "2200", "3000")
TARGET_KINDS = ("dir", "amqp", "http")
DEAD_LETTER_REASONS = ("conversion_failed", "refused", "out_of_attempts")
NULLIFICATION_EFFECTS = ("withdrew", "repeated", "unmatched")
#: A wire-contract rule name: a letter and a number, as ``C17`` or ``B5``.
_RULE = re.compile(r"[A-Z][0-9]{1,2}[a-z]?")

#: States counted in the outbox depth: everything that still waits for a delivery.
WAITING_STATES = (Status.PENDING, Status.DELIVERING, Status.RETRYING, Status.HELD)

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONVERSION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# prometheus_client adds a ``<name>_created`` timestamp series beside every counter and histogram by default:
# twice the series for nothing a dashboard uses. Process-wide, and only the output changes.
disable_created_metrics()


def error_code_label(error_code: int | None) -> str:
    if error_code is None:
        return "none"
    code = str(error_code)
    return code if code in ERROR_CODES else "other"


def rule_label(rule: str | None) -> str:
    if not rule:
        return "none"
    return rule if _RULE.fullmatch(rule) else "other"


def target_kind(target: str) -> str:
    """``dir``, ``amqp`` or ``http`` for a forwarder's :attr:`~adaptor.delivery.forwarders.Forwarder.target`."""
    scheme = target.split(":", 1)[0].lower()
    if scheme == "dir":
        return "dir"
    if scheme in ("amqp", "amqps", "failover"):  # failover:(amqp://...,amqp://...): a list of brokers
        return "amqp"
    if scheme in ("http", "https"):
        return "http"
    return "other"


class Metrics:
    """The adaptor's metrics in a registry of their own. Thread-safe (prometheus_client's metrics are).

    ``target`` is the configured delivery target: its kind's series are exported at zero from the start, so that
    ``rate()`` and alerts see them before the first delivery.
    """

    def __init__(self, target: str = "") -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "nhs111_requests",
            "ITK requests answered, by outcome, ITK ErrorCode and wire-contract rule",
            ("outcome", "error_code", "rule"),
            registry=registry,
        )
        self.request_seconds = Histogram(
            "nhs111_request_duration_seconds",
            "Time to answer an ITK request",
            ("outcome",),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.accepted = Counter("nhs111_messages_accepted", "New messages stored", registry=registry)
        self.resends = Counter(
            "nhs111_resends", "Identical resends of a stored message (answered without storing)", registry=registry
        )
        self.delivered = Counter(
            "nhs111_messages_delivered", "Messages the delivery target accepted", ("target",), registry=registry
        )
        self.retries = Counter(
            "nhs111_delivery_retries",
            "Failed delivery attempts that leave the message to be tried again",
            ("target",),
            registry=registry,
        )
        self.dead_letters = Counter(
            "nhs111_dead_letters", "Messages dead-lettered, by reason", ("reason",), registry=registry
        )
        self.nullifications = Counter(
            "nhs111_nullifications",
            "New nullifications stored, by what they did",
            ("effect",),
            registry=registry,
        )
        self.nullified = Counter(
            "nhs111_messages_nullified",
            "Stored messages withdrawn by their sender, by whether a withdrawal is delivered",
            ("withdrawal",),
            registry=registry,
        )
        self.conversion_seconds = Histogram(
            "nhs111_conversion_duration_seconds",
            "CDA to FHIR conversion time",
            buckets=CONVERSION_BUCKETS,
            registry=registry,
        )
        ProcessCollector(registry=registry)

        # Series that exist from the start, at zero.
        self.requests.labels("ok", "none", "none")
        for outcome in OUTCOMES:
            self.request_seconds.labels(outcome)
        kind = target_kind(target) if target else None
        if kind is not None:
            self.delivered.labels(kind)
            self.retries.labels(kind)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason)
        for effect in NULLIFICATION_EFFECTS:
            self.nullifications.labels(effect)
        for withdrawal in ("queued", "none"):
            self.nullified.labels(withdrawal)

    # -- recording -------------------------------------------------------------------------------------------

    def request_answered(self, outcome: str, seconds: float, fault: ItkFault | None = None) -> None:
        """One ITK POST answered: ``ok``, ``fault`` (``fault`` given) or ``refused`` (an HTTP error)."""
        outcome = outcome if outcome in OUTCOMES else "other"
        error_code = error_code_label(fault.error_code if fault is not None else None)
        rule = rule_label(fault.rule if fault is not None else None)
        self.requests.labels(outcome, error_code, rule).inc()
        self.request_seconds.labels(outcome).observe(seconds)

    def message_accepted(self) -> None:
        self.accepted.inc()

    def resend_received(self) -> None:
        self.resends.inc()

    def message_delivered(self, target: str) -> None:
        self.delivered.labels(target_kind(target)).inc()

    def retry_scheduled(self, target: str) -> None:
        self.retries.labels(target_kind(target)).inc()

    def dead_lettered(self, reason: str) -> None:
        self.dead_letters.labels(reason if reason in DEAD_LETTER_REASONS else "other").inc()

    def conversion_took(self, seconds: float) -> None:
        self.conversion_seconds.observe(seconds)

    def nullification_received(self, effect: str) -> None:
        """A new nullification stored: ``withdrew``, ``repeated`` or ``unmatched``."""
        self.nullifications.labels(effect if effect in NULLIFICATION_EFFECTS else "other").inc()

    def message_nullified(self, *, withdrawal: bool) -> None:
        """A stored message withdrawn by its sender, with its withdrawal queued or with nothing to withdraw."""
        self.nullified.labels("queued" if withdrawal else "none").inc()

    # -- exposition ------------------------------------------------------------------------------------------

    def watch_store(self, store: MessageStore) -> None:
        """Export the outbox gauges of ``store``, read at each scrape."""
        self.registry.register(OutboxCollector(store))

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class OutboxCollector:
    """The outbox gauges, read from the store when Prometheus scrapes (two small indexed queries).

    The counts use the outbox's ``(state, next_attempt_at)`` index and touch only the waiting, dead-lettered,
    rejected and withdrawn rows (few), never the delivered ones, which grow without bound; the oldest age joins
    those waiting rows to their message by primary key. A store that cannot be read gives ``nhs111_store_up 0``
    and no outbox gauges, rather than a failed scrape.
    """

    def __init__(self, store: MessageStore) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        # Registration calls this; returning nothing keeps it from running a query just to learn the names.
        return ()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("nhs111_store_up", "1 when the outbox gauges could be read from the store")
        try:
            counts, oldest = outbox_snapshot(self.store)
        except StoreError as exc:
            log.debug("outbox gauges unavailable", extra={"error": str(exc)})
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(
            "nhs111_outbox_depth", "Messages waiting for delivery (pending, delivering, retrying, held)"
        )
        depth.add_metric([], sum(counts[state] for state in WAITING_STATES))
        yield depth
        age = GaugeMetricFamily(
            "nhs111_outbox_oldest_age_seconds", "Age of the oldest message waiting for delivery (0 when none)"
        )
        age.add_metric([], max(0.0, (utc_now() - oldest).total_seconds()) if oldest is not None else 0.0)
        yield age
        by_state = GaugeMetricFamily(
            "nhs111_outbox_messages",
            "Messages in the outbox by delivery state (delivered ones excepted)",
            labels=["state"],
        )
        for state, count in counts.items():
            by_state.add_metric([state.value], count)
        yield by_state


def outbox_snapshot(store: MessageStore) -> tuple[dict[Status, int], datetime | None]:
    """How many messages are in each waiting state, in ``dead_letter``, ``rejected``, ``nullified`` and
    ``unmatched``, and when the oldest waiting message was received (UTC; ``None`` when nothing waits). Raises
    :class:`StoreError`."""
    counted = (*WAITING_STATES, Status.DEAD_LETTER, Status.REJECTED, Status.NULLIFIED, Status.UNMATCHED)
    count_query = (
        select(outbox.c.state, func.count())
        .where(outbox.c.state.in_([state.value for state in counted]))
        .group_by(outbox.c.state)
    )
    oldest_query = (
        select(func.min(messages.c.received_at))
        .select_from(outbox.join(messages, messages.c.id == outbox.c.record_id))
        .where(outbox.c.state.in_([state.value for state in WAITING_STATES]))
    )
    store.open()
    try:
        with store.engine.connect() as conn:
            found = {Status(state): int(n) for state, n in conn.execute(count_query)}
            oldest = conn.execute(oldest_query).scalar_one_or_none()
    except SQLAlchemyError as exc:
        raise StoreError(f"cannot read the outbox: {type(exc).__name__}") from exc
    return {state: found.get(state, 0) for state in counted}, _timestamp(oldest)


def _timestamp(value: object) -> datetime | None:
    """A queried timestamp as aware UTC: SQLite gives back naive datetimes (or, through ``min()``, text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value) if isinstance(value, datetime) else None
