"""Readiness (``GET /readyz``): can this process take and pass on messages right now?

Three checks, each named in the answer:

``store``
    The message store takes a write: a no-op ``UPDATE`` of the outbox in a transaction that is rolled back.
    ``SELECT 1`` would pass on a database that only reads (a PostgreSQL standby after a failover, a SQLite
    file on a read-only mount) while every ``accept`` fails; an update that matches no row needs the same
    write access as a real one and leaves nothing behind.
``delivery``
    The delivery target is reachable: the forwarder's ``check()`` (:class:`adaptor.delivery.forwarders.Checkable`):
    the folder can take a file; the AMQP broker accepts a connection (TLS and credentials included); the FHIR
    endpoint accepts a TCP connection and TLS handshake. Left out for a forwarder without ``check()``.
``allow_list``
    The recipient allow-list can be applied: static lists exist or the remote document has been fetched once.
    Until then every addressed message is answered 2100.

Beside the checks, the answer's ``schemas`` part names the schema rules in force and the files of the published
schema pack that ``PEM111_SCHEMA_DIR`` lacks (:func:`adaptor.itk.schemas.schema_rules`). It informs and never
fails readiness: a receiver without the pack still takes and passes on messages, as the operator configured it.

The store and delivery checks do I/O, so each runs at most once per few seconds (:class:`CachedCheck`), in a
thread of its own, and a caller waits for it at most :data:`CHECK_WAIT_SECONDS`: a scraper or an orchestrator
polling ``/readyz`` can neither hammer the broker nor tie up request threads behind a database that hangs.
A check that changes state is logged (WARNING when it fails, with the reason; INFO when it passes again); the
answer names the failing check and the kind of error only, since ``/readyz`` is unauthenticated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from adaptor.delivery.forwarders import Forwarder
from adaptor.itk.allowlist import AllowList
from adaptor.itk.schemas import SchemaRules
from adaptor.store import MessageStore, StoreError, outbox

log = logging.getLogger("adaptor.readiness")  # pinned: the JSON log format names it

#: How long a caller waits for a check that is running; the check itself goes on and its result is kept.
CHECK_WAIT_SECONDS = 6.0
#: How long a result is reused: the store check is cheap, a broker connection is not.
STORE_CHECK_TTL_SECONDS = 1.0
DELIVERY_CHECK_TTL_SECONDS = 5.0

CHECK_NAMES = ("store", "delivery", "allow_list")


@dataclass(frozen=True)
class CheckResult:
    """One check's state. ``error`` is the reason (for the log); ``kind`` the exception's class (for the answer)."""

    ok: bool
    error: str | None = None
    kind: str | None = None

    @classmethod
    def failed(cls, exc: BaseException) -> CheckResult:
        cause = exc.__cause__ if isinstance(exc, StoreError) and exc.__cause__ is not None else exc
        return cls(False, f"{type(exc).__name__}: {exc}", type(cause).__name__)


class CachedCheck:
    """Runs ``probe`` (which raises when the check fails) at most once per ``ttl`` seconds.

    Callers that arrive while it runs share that run. A run happens in its own daemon thread so that a caller
    can stop waiting after ``wait`` seconds (answered as failed) without leaving a request thread stuck in a
    connect that takes minutes to time out; a probe that hangs blocks no later caller for longer than ``wait``
    and starts no second thread until it returns.
    """

    def __init__(self, name: str, probe: Callable[[], None], *, ttl: float, wait: float = CHECK_WAIT_SECONDS) -> None:
        self.name = name
        self._probe = probe
        self._ttl = ttl
        self._wait = wait
        self._lock = threading.Lock()
        self._result: CheckResult | None = None
        self._checked_at = float("-inf")
        self._running: threading.Event | None = None

    def result(self) -> CheckResult:
        """The current result: the cached one, or that of a run started (or joined) now."""
        return self.begin()()

    def begin(self) -> Callable[[], CheckResult]:
        """Start a run unless the cached result is fresh or one is running; the returned function waits for
        it (at most ``wait`` seconds from now). Lets a caller start several checks before waiting for any."""
        with self._lock:
            cached = self._result
            if cached is not None and time.monotonic() - self._checked_at < self._ttl:
                return lambda: cached
            if self._running is None:
                self._running = threading.Event()
                thread = threading.Thread(
                    target=self._run, args=(self._running,), name=f"readyz-{self.name}", daemon=True
                )
                thread.start()
            running = self._running
        deadline = time.monotonic() + self._wait

        def finish() -> CheckResult:
            if not running.wait(max(0.0, deadline - time.monotonic())):
                return CheckResult(False, f"no answer within {self._wait:g} s", "Timeout")
            with self._lock:
                assert self._result is not None  # set before the event
                return self._result

        return finish

    def _run(self, done: threading.Event) -> None:
        try:
            self._probe()
            result = CheckResult(True)
        except Exception as exc:  # any failure of the probe is the check failing
            result = CheckResult.failed(exc)
        with self._lock:
            previous, self._result = self._result, result
            self._checked_at = time.monotonic()
            self._running = None
        done.set()
        if result.ok and previous is not None and not previous.ok:
            log.info("readiness check passes again", extra={"check": self.name})
        elif not result.ok and (previous is None or previous.ok):
            log.warning("readiness check failing", extra={"check": self.name, "error": result.error})


def check_store_writable(store: MessageStore) -> None:
    """Raise :class:`StoreError` unless the store accepts a write (see the module docstring)."""
    store.open()
    try:
        with store.engine.connect() as conn:
            transaction = conn.begin()
            try:
                # No row has an empty id; the statement still needs (and takes) write access.
                conn.execute(
                    update(outbox).where(outbox.c.record_id == "").values(updated_at=outbox.c.updated_at)
                )
            finally:
                transaction.rollback()
    except SQLAlchemyError as exc:
        raise StoreError(f"the message store {store.url} takes no writes: {_reason(exc)}") from exc


def _reason(exc: SQLAlchemyError) -> str:
    # The driver's error, never SQLAlchemy's text, which quotes the statement.
    original = getattr(exc, "orig", None)
    return f"{type(original).__name__}: {original}" if original is not None else type(exc).__name__


@dataclass(frozen=True)
class ReadinessReport:
    """The checks' results; :meth:`body` is the JSON answer of ``/readyz``."""

    results: dict[str, CheckResult]
    schemas: SchemaRules | None = None

    @property
    def ok(self) -> bool:
        return all(result.ok for result in self.results.values())

    @property
    def failing(self) -> list[str]:
        return [name for name, result in self.results.items() if not result.ok]

    def body(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        for name, result in self.results.items():
            checks[name] = {"ok": True} if result.ok else {"ok": False, "error": result.kind or "Error"}
        status = "ready" if self.ok else "unavailable"
        body: dict[str, Any] = {"status": status, "failing": self.failing, "checks": checks}
        if self.schemas is not None:
            body["schemas"] = self.schemas.body()
        return body


class Readiness:
    """The checks of one application (see the module docstring)."""

    def __init__(
        self,
        store: MessageStore,
        forwarder: Forwarder,
        allow_list: AllowList,
        schemas: Callable[[], SchemaRules] | None = None,
    ) -> None:
        self._allow_list = allow_list
        self._schemas = schemas
        self._checks: dict[str, CachedCheck] = {
            "store": CachedCheck("store", lambda: check_store_writable(store), ttl=STORE_CHECK_TTL_SECONDS)
        }
        check = getattr(forwarder, "check", None)
        if callable(check):
            self._checks["delivery"] = CachedCheck("delivery", check, ttl=DELIVERY_CHECK_TTL_SECONDS)

    @property
    def names(self) -> tuple[str, ...]:
        return (*self._checks, "allow_list")

    def evaluate(self, only: Collection[str] = ()) -> ReadinessReport:
        """Run the checks named in ``only`` (every check when empty); the I/O checks run concurrently."""
        wanted = [name for name in self.names if not only or name in only]
        # Every check is started before any is waited for, so that their probes run side by side.
        waiters = {
            name: self._allow_list_result if name == "allow_list" else self._checks[name].begin() for name in wanted
        }
        schemas = self._schemas() if self._schemas is not None else None
        return ReadinessReport({name: waiter() for name, waiter in waiters.items()}, schemas)

    def _allow_list_result(self) -> CheckResult:
        if self._allow_list.ready:
            return CheckResult(True)
        return CheckResult(False, "the remote allow-list has not been fetched yet", "NotLoaded")

