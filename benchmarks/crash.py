"""Crash and outage runs under load: the long forms of ``tests/test_crash.py`` and ``tests/test_delivery_modes.py``.

Both stream corpus messages of about 110 KB (:data:`benchmarks.load.MESSAGES_110KB`) at a real ``nhs111 serve``
from sender threads that behave like real ITK senders: a message that got no ``OK`` (connection refused or
reset, a 2100 fault) is sent again, byte for byte, until it is answered ``OK``.

* :func:`crash_run`: the server is killed with SIGKILL at random moments (uniformly 0.5-3 s apart) and started
  again on the same data folder and port, ``kills`` times. Afterwards every message answered ``OK`` must be
  delivered; copies beyond one per MessageID at the target are counted, and each must be explained by the
  store (the consumer drops it by its ``messageId``): a MessageID may arrive as many times as the store
  recorded attempts that handed it over or may have (:func:`possibly_sent`), so a copy beyond those is
  *unexplained*.
* :func:`outage_run`: the delivery target is down for ``outage_seconds`` in the middle of the stream (the folder
  replaced by a regular file, or the private RabbitMQ node stopped), with the default retry settings. Nothing
  answered ``OK`` may be lost; the time from the end of the outage until the backlog is delivered is reported.
"""

from __future__ import annotations

import http.client
import random
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptor.store import AttemptOutcome, MessageStore, Status
from benchmarks import e2e
from benchmarks.load import MESSAGES_110KB, QueueWatcher, Template, load_templates

_OK = re.compile(rb"SimpleMessageResponse[^>]*>\s*OK\b")

#: Short leases and retries, as in tests/test_crash.py: a killed server's claims are taken over a second after
#: the restart, so the run measures recovery rather than waiting out the production lease (120 s).
CRASH_SETTINGS = {
    "PEM111_DELIVERY_LEASE_SECONDS": "1",
    "PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS": "0.05",
    "PEM111_DELIVERY_BACKOFF_MAX_SECONDS": "0.5",
    "PEM111_DELIVERY_POLL_SECONDS": "0.1",
}
SETTLE_TIMEOUT_SECONDS = 300.0


@dataclass
class Pacer:
    """Send times ``1/rate`` seconds apart, shared by every sender thread: an open-loop rate, as long as the
    senders keep up (a sender that falls behind sends at once; the lost turns are not made up in a burst)."""

    rate: float
    _next: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_turn(self, stopping: threading.Event) -> None:
        with self._lock:
            now = time.monotonic()
            turn = max(self._next, now)
            self._next = turn + 1.0 / self.rate
        stopping.wait(turn - now)


@dataclass
class Stream:
    """Sender threads posting fresh corpus messages, each resent unchanged until answered ``OK``.

    With several ``ports`` (replicas behind a load balancer) new messages go to each in turn and a resend goes to
    the next one; with a ``pacer`` new messages are sent at its rate, otherwise as fast as the answers come."""

    ports: list[int]
    templates: list[Template]
    pacer: Pacer | None = None
    answered_ok: dict[str, float] = field(default_factory=dict)  # MessageID -> wall-clock time of the OK
    sent: set[str] = field(default_factory=set)
    unanswered: int = 0  # sends that got no OK; each was sent again
    resent_ok: int = 0  # messages answered OK only on a resend
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, senders: int) -> None:
        for index in range(senders):
            thread = threading.Thread(target=self._send, args=(random.Random(index),), daemon=True)
            self.threads.append(thread)
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)

    def ok_count(self) -> int:
        with self.lock:
            return len(self.answered_ok)

    def _send(self, rng: random.Random) -> None:
        turn = rng.randrange(len(self.ports))
        while not self.stopping.is_set():
            if self.pacer is not None:
                self.pacer.wait_turn(self.stopping)
                if self.stopping.is_set():
                    break
            message_id, body = rng.choice(self.templates).fresh()
            with self.lock:
                self.sent.add(message_id)
            tries = 0
            while not self.stopping.is_set():
                tries += 1
                turn += 1
                if self._post(self.ports[turn % len(self.ports)], body):
                    with self.lock:
                        self.answered_ok[message_id] = time.time()
                        self.resent_ok += tries > 1
                    break
                with self.lock:
                    self.unanswered += 1
                time.sleep(0.05)  # a sender's retry interval, shortened

    def _post(self, port: int, body: bytes) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("POST", "/report", body, {"Content-Type": "text/xml; charset=utf-8"})
            response = connection.getresponse()
            return response.status == 200 and bool(_OK.search(response.read()))
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()


@dataclass
class RobustnessResult:
    """What a crash or outage run saw. Times in seconds."""

    name: str
    sent: int = 0
    answered_ok: int = 0
    resent_ok: int = 0
    unanswered_sends: int = 0
    delivered: int = 0  # messages answered OK and found delivered (store state and target)
    lost: int = 0  # answered OK but not at the target
    copies_at_target: int = 0
    duplicates: int = 0  # copies beyond one per MessageID at the target
    #: Copies beyond the attempts the store recorded as delivered or interrupted for that MessageID.
    unexplained_duplicates: int = 0
    #: Copies beyond one per MessageID beyond the interrupted and in-doubt attempts the store's
    #: ``possible_redeliveries()`` lists for it: the store's count of possible copies must be an upper bound.
    unlisted_duplicates: int = 0
    interrupted_attempts: int = 0
    in_doubt_attempts: int = 0
    #: Attempts recorded as delivered beyond the first per message: a send that outlasted its lease while another
    #: worker took the message over and sent it again (both copies recorded, neither one interrupted).
    repeat_deliveries: int = 0
    dead_letters: int = 0
    #: Stored but not yet delivered when the drain clock started (end of the stream, or of the outage).
    backlog: int = 0
    drain_s: float = 0.0  # from the end of the stream (crash) or of the outage (outage) until all was delivered
    detail: str = ""
    error: str | None = None

    @property
    def passed(self) -> bool:
        return (
            self.error is None
            and self.lost == 0
            and self.unexplained_duplicates == 0
            and self.unlisted_duplicates == 0
            and self.answered_ok > 0
        )


def _store_counts(database_url: str) -> dict[Status, int]:
    store = MessageStore(database_url)
    try:
        return store.count_by_status()
    finally:
        store.close()


def _backlog(database_url: str) -> int:
    counts = _store_counts(database_url)
    return sum(n for status, n in counts.items() if status not in (Status.DELIVERED, Status.DEAD_LETTER))


def _wait_settled(database_url: str, timeout: float) -> float:
    """Until nothing is waiting or being delivered; returns the wall-clock time it was reached."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = _store_counts(database_url)
        if counts[Status.PENDING] + counts[Status.DELIVERING] + counts[Status.RETRYING] + counts[Status.HELD] == 0:
            return time.time()
        time.sleep(0.1)
    raise TimeoutError(f"the outbox did not drain within {timeout:.0f} s: {_store_counts(database_url)}")


def _folder_copies(outbox: Path) -> Counter[str]:
    """MessageID -> files (``<MessageID>.json``, or ``<MessageID>-<record>.json`` for a second copy)."""
    return Counter(path.name[:36] for path in outbox.glob("*.json"))


#: Attempt outcomes after which the target has, or may have, a copy: each explains one copy at the target.
POSSIBLY_SENT = frozenset({AttemptOutcome.DELIVERED, AttemptOutcome.INTERRUPTED, AttemptOutcome.IN_DOUBT})


def possibly_sent(store: MessageStore, message_id: str) -> tuple[int, int]:
    """``(attempts, delivered)`` for every record with ``message_id``: the attempts the store recorded as having
    handed the Bundle over (*delivered*) or as possibly having done so (*interrupted*: never finished; *in doubt*:
    written, no answer), and how many of them are *delivered*.

    The target may hold up to ``attempts`` copies. A *failed* attempt is not counted: the store records it as
    not accepted by the target, so a copy coming from one would be unexplained (and reported as such)."""
    attempts = delivered = 0
    for record in store.find_by_message_id(message_id):
        for attempt in store.delivery_history(record.id):
            if attempt.outcome in POSSIBLY_SENT:
                attempts += 1
                delivered += attempt.outcome is AttemptOutcome.DELIVERED
    return attempts, delivered


def unexplained_copies(store: MessageStore, copies: Counter[str]) -> dict[str, int]:
    """MessageID -> copies at the target beyond what the store explains (:func:`possibly_sent`); only MessageIDs
    with any. A MessageID the store never handed over explains none of its copies."""
    unexplained = {}
    for message_id, count in copies.items():
        if count > 1 and (extra := count - max(1, possibly_sent(store, message_id)[0])) > 0:
            unexplained[message_id] = extra
    return unexplained


def _account(result: RobustnessResult, stream: Stream, copies: Counter[str], database_url: str) -> None:
    ok = set(stream.answered_ok)
    store = MessageStore(database_url)
    try:
        redeliveries = store.possible_redeliveries()
        listed = Counter[str]()
        for redelivery in redeliveries:
            listed[redelivery.message_id] += redelivery.interrupted_attempts + redelivery.in_doubt_attempts
        counts = store.count_by_status()
        unexplained = unexplained_copies(store, copies)
        # Only a message with more than one copy can have been delivered more than once.
        repeats = sum(max(0, possibly_sent(store, m)[1] - 1) for m, n in copies.items() if n > 1)
    finally:
        store.close()
    result.sent = len(stream.sent)
    result.answered_ok = len(ok)
    result.resent_ok = stream.resent_ok
    result.unanswered_sends = stream.unanswered
    result.delivered = len(ok & set(copies))
    result.lost = len(ok - set(copies))
    result.copies_at_target = sum(copies.values())
    result.duplicates = sum(n - 1 for n in copies.values())
    result.unexplained_duplicates = sum(unexplained.values())
    result.unlisted_duplicates = sum(max(0, n - 1 - listed[m]) for m, n in copies.items())
    result.interrupted_attempts = sum(r.interrupted_attempts for r in redeliveries)
    result.in_doubt_attempts = sum(r.in_doubt_attempts for r in redeliveries)
    result.repeat_deliveries = repeats
    result.dead_letters = counts[Status.DEAD_LETTER]


@dataclass
class _Target:
    """Where a run delivers to, how to break and mend it, and how to count what arrived."""

    name: str
    settings: dict[str, str]
    copies: Callable[[], Counter[str]]
    break_it: Callable[[], None]
    mend_it: Callable[[], None]
    close: Callable[[], None] = lambda: None
    notes: Callable[[], str] = lambda: ""  # what the consumer saw besides the copies, for the run's notes


def _folder_target(folder: Path) -> _Target:
    outbox = folder / "outbox"
    parked = folder / "outbox-parked"

    def break_it() -> None:
        outbox.mkdir(parents=True, exist_ok=True)
        outbox.rename(parked)
        outbox.write_text("not a folder: the delivery target is down")

    def mend_it() -> None:
        outbox.unlink()
        parked.rename(outbox)

    return _Target("folder", {}, lambda: _folder_copies(outbox), break_it, mend_it)


def _queue_target(broker: Any) -> _Target:
    queue = broker.unique_queue("soak")
    broker.declare_queue(queue)
    watcher = QueueWatcher(broker.url, queue, broker.username, broker.password)
    watcher.start()

    def copies() -> Counter[str]:
        time.sleep(1.0)  # the consumer's last deliveries
        return watcher.copies()

    def mend_it() -> None:
        broker.start()  # the watcher's consumer connects again by itself

    def notes() -> str:
        # Copies the broker handed the consumer again after its acceptance was lost are not the adaptor's and are
        # not counted as copies; say how many there were, and whether the consumer had to reconnect.
        seen = [f"{watcher.broker_redeliveries} consumer-side redeliveries"] if watcher.broker_redeliveries else []
        return "; ".join(seen + ([f"consumer reconnected ({watcher.error})"] if watcher.error else []))

    settings = {
        "PEM111_FORWARD_TARGET": broker.url,
        "PEM111_AMQP_QUEUE_NAME": queue,
        "PEM111_AMQP_PROTOCOL": "1.0",
        "PEM111_AMQP_USERNAME": broker.username,
        "PEM111_AMQP_PASSWORD": broker.password,
    }
    return _Target("RabbitMQ (AMQP 1.0)", settings, copies, broker.stop, mend_it, watcher.close, notes)


def crash_run(corpus: Path, *, kills: int, senders: int = 8, broker: Any = None) -> RobustnessResult:
    """SIGKILL the server ``kills`` times at random moments under load; check nothing answered OK was lost."""
    templates = load_templates(corpus, MESSAGES_110KB)
    with tempfile.TemporaryDirectory(prefix="pem111-crash-") as temporary:
        folder = Path(temporary)
        target = _queue_target(broker) if broker is not None else _folder_target(folder)
        result = RobustnessResult(f"crash: {kills} SIGKILLs under load, {target.name} target")
        port = e2e.free_port()
        env = e2e.server_env(folder, port, corpus, **CRASH_SETTINGS, **target.settings)
        stream = Stream([port], templates)
        rng = random.Random()
        server = e2e.start("serve", env, folder / "server.log")
        try:
            e2e.wait_until_serving(server, port)
            stream.start(senders)
            restart_seconds = []
            for _ in range(kills):
                time.sleep(rng.uniform(0.5, 3.0))
                server.popen.kill()
                server.popen.wait(10)
                killed = time.monotonic()
                server = e2e.start("serve", env, folder / "server.log")
                e2e.wait_until_serving(server, port)
                restart_seconds.append(time.monotonic() - killed)
            time.sleep(3.0)  # a last stretch of normal service
            stream.stop()
            stopped = time.time()
            result.backlog = _backlog(env_database_url(env))
            settled = _wait_settled(env_database_url(env), SETTLE_TIMEOUT_SECONDS)
            result.drain_s = settled - stopped
            _account(result, stream, target.copies(), env_database_url(env))
            result.detail = _notes(
                f"{senders} senders; restart to first answer {min(restart_seconds):.1f}-{max(restart_seconds):.1f} s",
                result,
                target,
            )
        except (RuntimeError, TimeoutError) as exc:
            stream.stop()
            result.error = str(exc).splitlines()[0]
        finally:
            server.stop()
            target.close()
    return result


def outage_run(
    corpus: Path,
    *,
    outage_seconds: float,
    senders: int = 4,
    broker: Any = None,
    before: float = 5.0,
    after: float = 5.0,
) -> RobustnessResult:
    """The delivery target down for ``outage_seconds`` under load, default retry settings; time to drain."""
    templates = load_templates(corpus, MESSAGES_110KB)
    with tempfile.TemporaryDirectory(prefix="pem111-outage-") as temporary:
        folder = Path(temporary)
        target = _queue_target(broker) if broker is not None else _folder_target(folder)
        result = RobustnessResult(f"outage: {target.name} target down {outage_seconds:.0f} s under load")
        port = e2e.free_port()
        env = e2e.server_env(folder, port, corpus, **target.settings)
        stream = Stream([port], templates)
        server = e2e.start("serve", env, folder / "server.log")
        try:
            e2e.wait_until_serving(server, port)
            stream.start(senders)
            time.sleep(before)
            ok_before = stream.ok_count()
            target.break_it()
            time.sleep(outage_seconds)
            ok_during = stream.ok_count() - ok_before
            target.mend_it()
            mended = time.time()
            result.backlog = _backlog(env_database_url(env))
            time.sleep(after)
            stream.stop()
            settled = _wait_settled(env_database_url(env), SETTLE_TIMEOUT_SECONDS)
            result.drain_s = settled - mended
            _account(result, stream, target.copies(), env_database_url(env))
            result.detail = _notes(
                f"{senders} senders; {ok_during} messages answered OK during the outage", result, target
            )
        except (RuntimeError, TimeoutError) as exc:
            stream.stop()
            result.error = str(exc).splitlines()[0]
        finally:
            server.stop()
            target.close()
    return result


def _notes(detail: str, result: RobustnessResult, target: _Target) -> str:
    notes = [detail]
    if result.repeat_deliveries:
        notes.append(f"{result.repeat_deliveries} repeat deliveries (a send outlasted its lease)")
    return "; ".join(note for note in (*notes, target.notes()) if note)


def env_database_url(env: dict[str, str]) -> str:
    return f"sqlite:///{Path(env['PEM111_DATA_DIR']).resolve() / 'messages.db'}"


def markdown(results: list[RobustnessResult]) -> str:
    lines = [
        "| run | sent | answered OK | OK only on a resend | unanswered sends | delivered | lost | duplicates "
        "(unexplained) | interrupted attempts | dead letters | backlog | drain s | verdict | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | | | | | | | | | | | | **not completed** | {r.error} |")
            continue
        verdict = "passed" if r.passed else "**failed**"
        lines.append(
            f"| {r.name} | {r.sent} | {r.answered_ok} | {r.resent_ok} | {r.unanswered_sends} | {r.delivered} "
            f"| {r.lost} | {r.duplicates} ({r.unexplained_duplicates}) | {r.interrupted_attempts} | {r.dead_letters} "
            f"| {r.backlog} | {r.drain_s:.1f} | {verdict} | {r.detail} |"
        )
    return "\n".join(lines)


def main() -> int:  # pragma: no cover - a manual entry point: python -m benchmarks.crash
    corpus = e2e.ROOT.parent / "shared" / "corpus" / "reference"
    results = [crash_run(corpus, kills=5), outage_run(corpus, outage_seconds=10)]
    print(markdown(results))
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
