"""Delivery from the outbox: claim a stored message, forward its stored Bundle, record the attempt.

The request path converts a message and stores it with its Bundle (:mod:`adaptor.accept`); everything after
that happens here, so a target that is down for an hour costs retries, never a lost message:

* :class:`Deliverer` delivers one claimed message: logs the attempt as started (with the Bundle's version),
  hands the stored Bundle to the forwarder, and records the outcome. Every attempt sends the same bytes: only an
  operator's reconversion (:mod:`adaptor.delivery.replay`) makes a new version. (A message stored by an adaptor
  before schema version 2 has no Bundle yet: its first attempt converts it and keeps the result as version 1.)
  It decides what a failure means: a permanent refusal (or a conversion failure of such an old message)
  dead-letters the message at once; a transient failure is retried after an exponential backoff with
  jitter, until ``PEM111_DELIVERY_MAX_ATTEMPTS``, then dead-lettered with the last error. Sync mode uses it in
  the request thread (:mod:`adaptor.accept`); a failure there holds the message for the sender's resend.
* :class:`OutboxWorker` runs deliverers in threads (``nhs111 serve``, or ``nhs111 worker`` on its own). Each
  thread claims the message that has been due longest, under a lease; :meth:`OutboxWorker.wake` makes idle
  threads look at once (the service calls it after storing a message), otherwise they poll every
  ``PEM111_DELIVERY_POLL_SECONDS``.

A process killed mid-delivery leaves a claimed message behind: its lease expires and another worker takes it
over. If the first one had already handed the Bundle over, the target gets it twice, with the same MessageID
(the ``messageId`` property); the store counts these (:meth:`~adaptor.store.MessageStore.possible_redeliveries`).
An attempt that outlasts its lease (a send slower than ``PEM111_DELIVERY_LEASE_SECONDS``) is taken over the
same way while it is still running, and may reach the target as well: the takeover closes the slow attempt as
``interrupted`` and it stays so whatever it ended with, so ``possible_redeliveries`` counts it; the slow worker
logs a warning. A send that loses its connection after writing the Bundle, before the target answers
(:class:`~adaptor.delivery.forwarders.InDoubtDeliveryError`), is retried like any transient failure but recorded
as ``in_doubt``, and counted there too. Each attempt hands the Bundle over
at most once: forwarders never send again inside one call (a retry is a new attempt, after the backoff).

A store write that fails after the claim (the database restarting, say) does not leave the message to wait out
its lease: the deliverer keeps the outcome it could not record (delivered, failed, in doubt; or, when the attempt
could not even be recorded as started, a release with nothing sent) and writes it again as soon as the store
answers: the delivery threads try before they claim anything else, every ``PEM111_DELIVERY_POLL_SECONDS`` while
the store is down. So a delivered message is recorded as delivered, not sent again, and a failed one is released
to its retry. Such an outcome is kept for one lease after the write failed; after that the lease has run out, and
the worker that takes the message over closes the attempt as ``interrupted`` (a possible redelivery) as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from adaptor.config import Settings
from adaptor.delivery.activity import RequestActivity
from adaptor.delivery.conversion import ConversionError, bundle_text, convert
from adaptor.delivery.forwarders import (
    Delivery,
    Forwarder,
    InDoubtDeliveryError,
    PermanentDeliveryError,
    log_summary,
)
from adaptor.itk.faults import log_internal_error
from adaptor.itk.wire import utc_now
from adaptor.ops.metrics import Metrics
from adaptor.store import AttemptOutcome, Claim, MessageStore, Status, StoreError

log = logging.getLogger("adaptor.outbox")  # pinned: the JSON log format names it

#: Each wait is shortened by a random 0-20 %: messages that failed together (an outage) spread out instead of
#: retrying in one burst; the wait never exceeds the nominal backoff.
JITTER = 0.2

#: Longest kept error text (a status reason or attempt error).
MAX_ERROR = 2000

#: How long :meth:`OutboxWorker.stop` lets deliveries in flight finish: within the usual 30 s container stop grace.
STOP_TIMEOUT_SECONDS = 20.0

#: A database outage is logged at most this often by each worker thread.
STORE_ERROR_LOG_INTERVAL_SECONDS = 60.0

#: What an attempt that could not be recorded as started is released with: nothing was sent.
NOT_STARTED_ERROR = "not sent: the message store failed before the attempt could be recorded as started"


def process_owner_prefix() -> str:
    """``host/pid/random``: unique for this process, also across restarts that reuse the pid."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def backoff_seconds(attempt: int, settings: Settings, rng: random.Random | None = None) -> float:
    """The wait after the ``attempt``-th failed attempt: initial × 2^(attempt−1), at most the maximum, shortened
    by up to :data:`JITTER`."""
    exponent = min(max(attempt - 1, 0), 62)  # beyond this the cap applies anyway; avoids float overflow
    nominal = min(settings.delivery_backoff_max_seconds, settings.delivery_backoff_initial_seconds * 2.0**exponent)
    return nominal * (1.0 - JITTER * (rng or random).random())


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed message.

    ``status`` is the state it was left in: ``delivered``, ``retrying``, ``held`` or ``dead_letter``; or
    ``delivering`` when the claim was lost before anything was sent (another worker owns it now).
    ``recorded`` is ``False`` when the result could not be written to the store (the deliverer writes it again
    once the store answers: :meth:`Deliverer.record_unrecorded`), or the claim was no longer this worker's.
    """

    status: Status
    error: str | None = None
    error_id: str | None = None  # set for failures whose cause is logged under an error id
    recorded: bool = True


@dataclass
class _Release:
    """How a claimed attempt ended, to be written to the store (:meth:`MessageStore.finish`). One the store could
    not take is kept and written again (:meth:`Deliverer.record_unrecorded`) until ``give_up_at`` (monotonic: one
    lease after the write failed)."""

    claim: Claim
    status: Status
    outcome: AttemptOutcome
    target: str
    attempt_id: int | None
    error: str | None
    next_attempt_at: datetime | None
    give_up_at: float = 0.0
    failed_writes: int = 0

    def write(self, store: MessageStore) -> bool:
        """Record it and release the claim; whether the claim was still this worker's. Raises StoreError."""
        try:
            return store.finish(
                self.claim,
                state=self.status,
                outcome=self.outcome,
                target=self.target,
                attempt_id=self.attempt_id,
                error=self.error,
                next_attempt_at=self.next_attempt_at,
            )
        except StoreError:
            self.failed_writes += 1
            raise


def _fields(claim: Claim) -> dict[str, object]:
    """The log fields (:mod:`adaptor.ops.logs`) that identify a claimed message: identifiers, never content."""
    return {
        "record_id": claim.record_id,
        "message_id": claim.message_id,
        "tracking_id": claim.tracking_id,
        "interaction": claim.interaction,
        "ods_code": ",".join(claim.ods_codes) or None,
        "attempt": claim.attempt,
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class Deliverer:
    """Delivers claimed messages: record the start → forward the stored Bundle → record the outcome. Thread-safe.

    ``metrics`` counts deliveries, retries, dead letters and conversion times (:mod:`adaptor.ops.metrics`).
    """

    def __init__(
        self, settings: Settings, store: MessageStore, forwarder: Forwarder, *, metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.forwarder = forwarder
        self.metrics = metrics or Metrics()
        self._unrecorded: list[_Release] = []
        self._unrecorded_lock = threading.Lock()

    def deliver(self, claim: Claim) -> Outcome:
        """Deliver ``claim`` and release it into its next state. Raises :class:`StoreError` only when the attempt
        could not be started: nothing was sent, and the claim is released (held for the sender's resend in sync
        mode, due again otherwise) now or, when the store still fails, once it answers again."""
        if self._unrecorded:  # the store answered the claim just made: it may take what it could not before
            with contextlib.suppress(StoreError):
                self.record_unrecorded()
        target = self.forwarder.target
        if claim.interrupted:
            # Earlier attempts never finished (the process stopped): a possible duplicate with the same messageId.
            log.warning(
                "delivering again after interrupted attempts",
                extra={**_fields(claim), "interrupted": claim.interrupted},
            )
        if not claim.synchronous and claim.attempt > self.settings.delivery_max_attempts:
            # Only reachable when attempts keep being interrupted (e.g. the process dies on this message).
            error = f"gave up after {claim.attempt - 1} attempts, the last ones interrupted"
            log.error("message dead-lettered", extra={**_fields(claim), "reason": error})
            self.metrics.dead_lettered("out_of_attempts")
            return self._finish(claim, Status.DEAD_LETTER, AttemptOutcome.FAILED, target, None, error)

        bundle_json, bundle_version, converted_at = claim.bundle, claim.bundle_version or 1, claim.converted_at
        newly_converted = None
        if bundle_json is None:  # stored before schema version 2: converted once, kept as version 1
            converted_at = utc_now()
            converted = self._convert(claim, converted_at)
            if isinstance(converted, Outcome):
                return converted
            bundle_json = newly_converted = converted
            bundle_version = 1

        lease = self.settings.delivery_lease_seconds
        try:
            attempt_id = self.store.start_attempt(claim, target, lease, newly_converted, converted_at)
        except StoreError:
            # Nothing was sent: release the claim rather than leave the message to wait out its lease.
            state, due_in = (Status.HELD, None) if claim.synchronous else (Status.RETRYING, 0.0)
            self._finish(claim, state, AttemptOutcome.FAILED, target, None, NOT_STARTED_ERROR, next_attempt_in=due_in)
            raise
        if attempt_id is None:
            log.warning("lease lost before sending, not sent (another worker has it)", extra=_fields(claim))
            return Outcome(Status.DELIVERING, "lease lost", recorded=False)

        started = time.perf_counter()
        try:
            self.forwarder.send(
                Delivery(
                    record_id=claim.record_id,
                    message_id=claim.message_id,
                    tracking_id=claim.tracking_id,
                    interaction=claim.interaction,
                    ods_codes=claim.ods_codes,
                    dos_ids=claim.dos_ids,
                    bundle_json=bundle_json.encode("utf-8"),
                    bundle_version=bundle_version,
                    converted_at=converted_at,
                )
            )
        except PermanentDeliveryError as exc:
            error = _clip(f"refused by {target}: {type(exc).__name__}: {exc}")
            log.error(
                "delivery refused, message dead-lettered",
                extra={**_fields(claim), "target": target, "error": log_summary(exc)},
            )
            # The full error can quote the target's reply (an OperationOutcome may quote the Bundle).
            log.debug("delivery refused detail", extra={"record_id": claim.record_id, "error": error})
            self.metrics.dead_lettered("refused")
            return self._finish(claim, Status.DEAD_LETTER, AttemptOutcome.REJECTED, target, attempt_id, error)
        except Exception as exc:  # the Forwarder contract: anything else is transient
            log.debug(
                "delivery failure detail", extra={"record_id": claim.record_id, "error": f"{type(exc).__name__}: {exc}"}
            )
            # In doubt: the Bundle was written and no answer came, so the target may have it (a possible copy).
            outcome = AttemptOutcome.IN_DOUBT if isinstance(exc, InDoubtDeliveryError) else AttemptOutcome.FAILED
            error, summary = _clip(f"{type(exc).__name__}: {exc}"), _clip(log_summary(exc))
            return self._failed(claim, target, attempt_id, error, summary, outcome)

        log.info(
            "withdrawal delivered" if claim.withdrawal else "message delivered",
            extra={**_fields(claim), "target": target, "duration_ms": _ms(time.perf_counter() - started)},
        )
        self.metrics.message_delivered(target)
        # A withdrawal delivered is the end of a message its sender withdrew (nullification.md §2.3).
        delivered = Status.NULLIFIED if claim.withdrawal else Status.DELIVERED
        return self._finish(claim, delivered, AttemptOutcome.DELIVERED, target, attempt_id, None)

    def _convert(self, claim: Claim, now: datetime) -> str | Outcome:
        """The Bundle JSON for ``claim.raw`` (a message stored without one), or the dead-letter outcome when it
        cannot be converted."""
        target = self.forwarder.target
        started = time.perf_counter()
        try:
            bundle = convert(claim.raw, config=self.settings, now=now, id_seed=claim.record_id)
        except ConversionError as exc:
            self.metrics.conversion_took(time.perf_counter() - started)
            # The reason can quote document values: it goes to the store, and to the log only at DEBUG.
            log.error("conversion failed, message dead-lettered", extra=_fields(claim))
            log.debug("conversion failure detail", extra={"record_id": claim.record_id, "error": str(exc)})
            self.metrics.dead_lettered("conversion_failed")
            error = _clip(f"conversion failed: {exc}")
            return self._finish(claim, Status.DEAD_LETTER, AttemptOutcome.CONVERSION_FAILED, target, None, error)
        except Exception as exc:
            self.metrics.conversion_took(time.perf_counter() - started)
            error_id = log_internal_error(log, "conversion crashed, message dead-lettered", exc, **_fields(claim))
            self.metrics.dead_lettered("conversion_failed")
            error = f"conversion failed: internal conversion error {error_id}"
            outcome = self._finish(claim, Status.DEAD_LETTER, AttemptOutcome.CONVERSION_FAILED, target, None, error)
            return Outcome(outcome.status, outcome.error, error_id, outcome.recorded)
        seconds = time.perf_counter() - started
        self.metrics.conversion_took(seconds)
        log.debug("message converted", extra={"record_id": claim.record_id, "duration_ms": _ms(seconds)})
        return bundle_text(bundle)

    def _failed(
        self, claim: Claim, target: str, attempt_id: int, error: str, summary: str, outcome: AttemptOutcome
    ) -> Outcome:
        """A transient failure: held for the sender (sync), retried later, or dead-lettered when out of attempts.

        ``error`` goes to the delivery history; ``summary`` (see :func:`log_summary`) to the log; ``outcome`` is
        the attempt's, *failed* or *in doubt*."""
        fields = {**_fields(claim), "target": target, "error": summary}
        if outcome is AttemptOutcome.IN_DOUBT:
            fields["in_doubt"] = True
        if claim.synchronous:
            log.warning("delivery failed, held for the sender's resend", extra=fields)
            self.metrics.retry_scheduled(target)
            return self._finish(claim, Status.HELD, outcome, target, attempt_id, error)
        if claim.attempt >= self.settings.delivery_max_attempts:
            log.error("delivery failed, out of attempts, message dead-lettered", extra=fields)
            self.metrics.dead_lettered("out_of_attempts")
            error = f"gave up after {claim.attempt} attempts: {error}"
            return self._finish(claim, Status.DEAD_LETTER, outcome, target, attempt_id, error)
        wait = backoff_seconds(claim.attempt, self.settings)
        log.warning("delivery failed, will retry", extra={**fields, "retry_in_s": round(wait, 1)})
        self.metrics.retry_scheduled(target)
        return self._finish(
            claim,
            Status.RETRYING,
            outcome,
            target,
            attempt_id,
            error,
            next_attempt_in=wait,
        )

    def _finish(
        self,
        claim: Claim,
        status: Status,
        outcome: AttemptOutcome,
        target: str,
        attempt_id: int | None,
        error: str | None,
        *,
        next_attempt_in: float | None = None,
    ) -> Outcome:
        next_attempt_at = None if next_attempt_in is None else utc_now() + timedelta(seconds=next_attempt_in)
        release = _Release(claim, status, outcome, target, attempt_id, error, next_attempt_at)
        try:
            owned = release.write(self.store)
        except StoreError as exc:
            # Kept and written again once the store answers (record_unrecorded), so that the message neither
            # waits out its lease nor, when it was delivered, is sent again.
            log.error(
                "could not record the delivery outcome, will record it when the store answers",
                extra={"record_id": claim.record_id, "outcome": outcome.value, "error": str(exc)},
            )
            release.give_up_at = time.monotonic() + self.settings.delivery_lease_seconds
            with self._unrecorded_lock:
                self._unrecorded.append(release)
            return Outcome(status, error, recorded=False)
        if not owned:
            # Another worker took the message over and delivers it too: a delivered one is then a possible
            # duplicate (same messageId), found in the delivery history, not in possible_redeliveries. (Or its
            # sender withdrew it meanwhile: its withdrawal is queued behind this attempt's lease.)
            log.warning(
                "lease expired during the attempt; another worker owns the message now"
                + (" and may deliver it again" if status is Status.DELIVERED else ""),
                extra={"record_id": claim.record_id, "outcome": outcome.value},
            )
        return Outcome(status, error, recorded=owned)

    @property
    def unrecorded(self) -> int:
        """How many outcomes wait to be written again (see :meth:`record_unrecorded`)."""
        with self._unrecorded_lock:
            return len(self._unrecorded)

    def record_unrecorded(self) -> None:
        """Write the outcomes the store could not take, oldest first, releasing their claims; one kept for a
        lease since its write failed is given up (the worker that takes the message over closes its attempt as
        ``interrupted``). Raises :class:`StoreError` when the store still fails: that one and the rest are kept.
        """
        with self._unrecorded_lock:
            waiting, self._unrecorded = self._unrecorded, []
        try:
            while waiting:
                entry = waiting[0]
                fields = {**_fields(entry.claim), "outcome": entry.outcome.value, "failed_writes": entry.failed_writes}
                if time.monotonic() >= entry.give_up_at:
                    log.error("delivery outcome not recorded within the lease, given up", extra=fields)
                    waiting.pop(0)
                    continue
                owned = entry.write(self.store)
                waiting.pop(0)
                # Not owned: the claim had been released already (the write that seemed to fail had committed)
                # or taken over (the attempt was then closed as interrupted, and stays so).
                log.info(
                    "delivery outcome recorded once the store answered"
                    + ("" if owned else "; the claim had already been released or taken over"),
                    extra=fields,
                )
        finally:
            if waiting:
                with self._unrecorded_lock:
                    self._unrecorded[:0] = waiting


class OutboxWorker:
    """Delivery threads over a shared store and forwarder.

    ``threads`` defaults to ``PEM111_DELIVERY_WORKERS``; 0 makes :meth:`start` a no-op (another process runs
    ``nhs111 worker``). :meth:`run_once` and :meth:`drain` deliver in the calling thread instead. ``metrics``
    (or, later, :meth:`report_to`) receives the delivery counts.
    """

    def __init__(
        self,
        settings: Settings,
        store: MessageStore,
        forwarder: Forwarder,
        *,
        threads: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.deliverer = Deliverer(settings, store, forwarder, metrics=metrics)
        self.thread_count = settings.delivery_workers if threads is None else threads
        #: The requests this process is answering: the threads let them go first (:mod:`adaptor.delivery.activity`).
        self.requests = RequestActivity()
        self.owner_prefix = process_owner_prefix()
        self._stopping = threading.Event()
        self._wakeups: list[threading.Event] = []
        self._threads: list[threading.Thread] = []
        # Set by a transient failure, cleared by the next success: the target was down and is back.
        self._target_was_failing = False

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the delivery threads (daemon threads: :meth:`stop` waits for them, a kill does not)."""
        if self._threads:
            return
        self._stopping.clear()
        for index in range(1, self.thread_count + 1):
            wakeup = threading.Event()
            thread = threading.Thread(
                target=self._run,
                args=(f"{self.owner_prefix}/worker-{index}", wakeup),
                name=f"outbox-{index}",
                daemon=True,
            )
            self._wakeups.append(wakeup)
            self._threads.append(thread)
            thread.start()
        if self._threads:
            log.info("delivery threads started", extra={"threads": len(self._threads)})

    def report_to(self, metrics: Metrics) -> None:
        """Count deliveries in ``metrics`` from now on: for a worker built before the application whose
        ``/metrics`` should show them (``nhs111 serve`` builds the worker first)."""
        self.deliverer.metrics = metrics

    def wake(self) -> None:
        """A message was stored: idle threads look for work now instead of at their next poll."""
        for wakeup in self._wakeups:
            wakeup.set()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
        """Stop claiming; wait up to ``timeout`` seconds for deliveries in flight. Returns whether every thread
        finished. A delivery still running is abandoned: its lease expires and another worker retries it."""
        self._stopping.set()
        self.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        running = [thread.name for thread in self._threads if thread.is_alive()]
        if self.deliverer.unrecorded:
            with contextlib.suppress(StoreError):
                self.deliverer.record_unrecorded()
            if self.deliverer.unrecorded:  # released when their leases expire
                log.warning("delivery outcomes not recorded at shutdown", extra={"count": self.deliverer.unrecorded})
        if running:
            # Its lease expires within the lease time and it is retried then.
            log.warning(
                "delivery still in progress at shutdown",
                extra={"threads": len(running), "lease_seconds": self.settings.delivery_lease_seconds},
            )
        self._threads.clear()
        self._wakeups.clear()
        return not running

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    # -- delivering ------------------------------------------------------------------------------------------

    def run_once(self, owner: str | None = None) -> Outcome | None:
        """Claim the message due longest and deliver it in this thread; ``None`` when nothing is due."""
        return self._deliver_next(owner or f"{self.owner_prefix}/inline", requests_first=False)

    def deferral(self, claim: Claim, now: datetime | None = None) -> float:
        """How long a delivery thread may still let requests go first before delivering ``claim``: what is left of
        ``PEM111_DELIVERY_DEFER_SECONDS`` since its Bundle was made (at acceptance, or by an operator's
        reconversion). A message that has waited that long already, such as the backlog of a sustained load or
        a retry, is delivered at once (:mod:`adaptor.delivery.activity`). Never more than half the lease, so
        that the claim is not taken over while it waits."""
        defer = self.settings.delivery_defer_seconds
        if defer <= 0 or claim.converted_at is None:  # no Bundle yet: stored long ago, by an older adaptor
            return 0.0
        waited = ((now or utc_now()) - claim.converted_at).total_seconds()
        return max(0.0, min(defer - waited, defer, self.settings.delivery_lease_seconds / 2))

    def _deliver_next(self, owner: str, *, requests_first: bool) -> Outcome | None:
        """Claim the message due longest; with ``requests_first``, wait for a moment with no request in flight
        for at most its :meth:`deferral`; deliver it. ``None`` when nothing is due."""
        claim = self.store.claim_due(owner, self.settings.delivery_lease_seconds)
        if claim is None:
            return None
        wait = self.deferral(claim) if requests_first else 0.0
        if wait > 0:
            self.requests.wait_for_quiet(wait)
        outcome = self.deliverer.deliver(claim)
        self._after(outcome)
        return outcome

    def drain(self, limit: int = 10_000) -> list[Outcome]:
        """:meth:`run_once` until nothing is due (or ``limit`` messages); the outcomes in order."""
        outcomes: list[Outcome] = []
        while len(outcomes) < limit:
            outcome = self.run_once()
            if outcome is None:
                break
            outcomes.append(outcome)
        return outcomes

    def _after(self, outcome: Outcome) -> None:
        """After a failure the target is presumed down; the next success brings the waiting retries forward
        instead of leaving them to their backoff (up to ``PEM111_DELIVERY_BACKOFF_MAX_SECONDS``)."""
        if outcome.status is Status.RETRYING:
            self._target_was_failing = True
        elif outcome.status is Status.DELIVERED and self._target_was_failing:
            self._target_was_failing = False
            try:
                count = self.store.retry_waiting_now()
            except StoreError as exc:
                log.warning("could not bring the waiting retries forward", extra={"error": str(exc)})
                return
            if count:
                log.info("target accepts messages again, waiting retries brought forward", extra={"count": count})
                self.wake()

    def _run(self, owner: str, wakeup: threading.Event) -> None:
        last_store_error = float("-inf")
        while not self._stopping.is_set():
            # Cleared before looking, so that a wake-up arriving while this thread looks is not lost.
            wakeup.clear()
            try:
                # Outcomes the store could not take come first: their claims are released as soon as it answers.
                if self.deliverer.unrecorded:
                    self.deliverer.record_unrecorded()
                outcome = self._deliver_next(owner, requests_first=True)
            except StoreError as exc:
                now = time.monotonic()
                if now - last_store_error >= STORE_ERROR_LOG_INTERVAL_SECONDS:
                    log.error(
                        "outbox: message store unavailable, retrying",
                        extra={"retry_every_s": self.settings.delivery_poll_seconds, "error": str(exc)},
                    )
                    last_store_error = now
                outcome = None
            except Exception as exc:
                # A defect: keep the thread alive; the claimed message's lease expires and it is retried.
                log_internal_error(log, "outbox: unexpected error", exc)
                outcome = None
            if outcome is None:
                wakeup.wait(self.settings.delivery_poll_seconds)
