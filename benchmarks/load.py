"""The load generator: corpus messages POSTed to a running ``nhs111 serve`` at increasing concurrency.

Run as its own process (``python -m benchmarks.load``; :mod:`benchmarks.e2e` does that), so that its work is
not counted in the server's process and the two compete for the CPUs only as a real sender on the same host
would::

    python -m benchmarks.load --url http://127.0.0.1:8080/report --corpus ../shared/corpus/reference \
        --mix primary-emergency,adastra-itk-ooh-referral-dx06 --concurrency 1 4 8 --duration 10 \
        --server-pid 1234 --outbox var/outbox

Each of ``concurrency`` threads keeps one HTTP/1.1 keep-alive connection (``http.client``) and sends the next
message as soon as the previous answer arrived (a closed loop). Every request is a corpus message with a fresh
``wsa:MessageID`` and ``trackingid`` (spliced into the raw bytes, so a sender costs almost no CPU). Per step it
measures: answers ``OK`` per second, the latency of the ``OK`` answers (p50/p99/max), the other answers by kind,
the time from each ``OK`` to the delivered Bundle (a file in the folder target, or a message at a consumer of the
queue), the backlog (answered ``OK``, not yet delivered) at the end of the step and at its largest, the server's
peak memory (``VmHWM`` of ``/proc/<pid>/status``) and the CPU time of the server (``/proc/<pid>/stat``) and of
the load generator itself over the step. After each step it waits until every message answered ``OK`` has been
delivered, so one step's backlog does not slow the next.

One JSON object per step goes to stdout (:class:`StepResult`); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

#: The corpus messages of about 110 KB, the size the throughput target is stated for.
MESSAGES_110KB = ("primary-emergency", "adastra-itk-ooh-referral-dx06")

REQUEST_SUFFIX = "-itk-request.xml"
_MESSAGE_ID = re.compile(rb"(<(?:[A-Za-z_][\w.-]*:)?MessageID\b[^>]*>)([^<]*)(<)")
_TRACKING_ID = re.compile(rb'(\btrackingid=")([^"]*)(")')
_OK = re.compile(rb"SimpleMessageResponse[^>]*>\s*OK\b")
_ERROR_CODE = re.compile(rb"ErrorCode[^>]*>\s*(\d+)\s*<")

#: How long one request may take before it counts as an error (a hung server).
REQUEST_TIMEOUT_SECONDS = 30.0
#: How long to wait, after a step, for the messages it got ``OK`` for to be delivered.
DELIVERY_TIMEOUT_SECONDS = 120.0


# -- the messages ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A corpus request cut around its MessageID and trackingid, so a fresh copy is a byte concatenation."""

    name: str
    parts: tuple[bytes, bytes, bytes]
    #: Whether the MessageID comes before the trackingid (the SOAP header precedes the body, so it always does
    #: in a real request; kept explicit rather than assumed).
    message_id_first: bool

    @classmethod
    def from_bytes(cls, name: str, raw: bytes) -> Template:
        message_id = _MESSAGE_ID.search(raw)
        tracking_id = _TRACKING_ID.search(raw)
        if message_id is None or tracking_id is None:
            raise ValueError(f"{name}: no wsa:MessageID or trackingid found")
        first, second = sorted((message_id.span(2), tracking_id.span(2)))
        parts = (raw[: first[0]], raw[first[1] : second[0]], raw[second[1] :])
        return cls(name, parts, message_id.start() < tracking_id.start())

    def fresh(self) -> tuple[str, bytes]:
        """A copy with a new MessageID and a new trackingid (uppercase UUIDs); returns ``(MessageID, bytes)``."""
        message_id = str(uuid.uuid4()).upper()
        tracking_id = str(uuid.uuid4()).upper()
        first, second = (message_id, tracking_id) if self.message_id_first else (tracking_id, message_id)
        head, middle, tail = self.parts
        return message_id, b"".join((head, first.encode(), middle, second.encode(), tail))


def load_templates(corpus: Path, names: Iterable[str] | None = None) -> list[Template]:
    """The named corpus requests (``primary-emergency`` for ``primary-emergency-itk-request.xml``), or all."""
    if names is None:
        paths = sorted(corpus.glob(f"*{REQUEST_SUFFIX}"))
    else:
        paths = [corpus / f"{name}{REQUEST_SUFFIX}" for name in names]
    templates = [Template.from_bytes(p.name.removesuffix(REQUEST_SUFFIX), p.read_bytes()) for p in paths]
    if not templates:
        raise ValueError(f"no requests in {corpus}")
    return templates


def corpus_allow_lists(corpus: Path) -> tuple[list[str], list[str]]:
    """The ODS codes and DoS ids the corpus requests are addressed to: the allow-lists for a server under load."""
    ods: set[str] = set()
    dos: set[str] = set()
    address = re.compile(rb"<(?:[\w.-]+:)?address\b([^>]*)>")
    for path in sorted(corpus.glob(f"*{REQUEST_SUFFIX}")):
        for attributes in address.findall(path.read_bytes()):
            uri = re.search(rb'\buri="([^"]*)"', attributes)
            kind = re.search(rb'\btype="([^"]*)"', attributes)
            if uri is None:
                continue
            value = uri.group(1).decode().strip()
            if kind is not None and kind.group(1) == b"2.16.840.1.113883.2.1.3.2.4.18.44":
                dos.add(value)
            elif value.startswith("urn:nhs-uk:addressing:ods:"):
                ods.add(value.removeprefix("urn:nhs-uk:addressing:ods:").split(":")[0])
    return sorted(ods), sorted(dos)


# -- statistics ------------------------------------------------------------------------------------------------


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` in 0..1); 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
    return ordered[int(min(rank, len(ordered))) - 1]


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (every thread), or ``None`` when it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count the fields after its end.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14 and 15


def backlog(ok_at: dict[str, float], delivered_at: dict[str, float], until: float) -> tuple[int, int, int]:
    """From the moments of the ``OK`` answers and of the deliveries (wall clock): the messages delivered by
    ``until``, the backlog (answered ``OK``, not yet delivered) at ``until``, and the largest backlog before it."""
    events = sorted([(moment, 1) for moment in ok_at.values() if moment <= until]
                    + [(moment, -1) for moment in delivered_at.values() if moment <= until])  # fmt: skip
    waiting = largest = 0
    for _, change in events:
        waiting += change
        largest = max(largest, waiting)  # a delivery may beat the client's reading of its OK: never below 0
    delivered = sum(1 for moment in delivered_at.values() if moment <= until)
    return delivered, max(0, waiting), largest


def peak_rss_mb(pid: int) -> float | None:
    """``VmHWM`` (the peak resident set size) of process ``pid`` in MiB, or ``None`` when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


# -- delivery watchers -----------------------------------------------------------------------------------------


class DeliveryWatcher(Protocol):
    """Tells when each message answered ``OK`` reached the delivery target (wall-clock seconds)."""

    def start(self) -> None: ...

    def delivered(self, message_ids: set[str], timeout: float) -> dict[str, float]:
        """Wait up to ``timeout`` s until every one of ``message_ids`` is delivered; return those that are."""
        ...

    def duplicates(self) -> int:
        """Copies seen beyond the first, over the watcher's life (0 where the target cannot show them)."""
        ...

    def close(self) -> None: ...


class FolderWatcher:
    """The folder target: ``<MessageID>.json`` appears when the Bundle is delivered.

    The delivery time is the file's ``st_ctime``: the forwarder writes a temporary file and links it into place,
    which sets the inode's change time, so no polling is needed while the load runs (resolution: the kernel's
    coarse clock, a few milliseconds).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def start(self) -> None:
        pass

    def delivered(self, message_ids: set[str], timeout: float) -> dict[str, float]:
        found: dict[str, float] = {}
        waiting = set(message_ids)
        deadline = time.monotonic() + timeout
        while True:
            for message_id in list(waiting):
                try:
                    found[message_id] = (self.folder / f"{message_id}.json").stat().st_ctime
                except FileNotFoundError:
                    continue
                waiting.discard(message_id)
            if not waiting or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def duplicates(self) -> int:
        # A second copy of the same Bundle is not written twice (the forwarder compares the bytes); a different
        # message with a reused MessageID gets a suffixed name, which fresh MessageIDs never cause.
        return sum(1 for path in self.folder.glob("*-*-*-*-*-*.json"))

    def close(self) -> None:
        pass


class NoWatcher:
    """No delivery target is watched (e.g. the server runs no delivery threads): delivery is not measured."""

    def start(self) -> None:
        pass

    def delivered(self, message_ids: set[str], timeout: float) -> dict[str, float]:
        return {}

    def duplicates(self) -> int:
        return 0

    def close(self) -> None:
        pass


class QueueWatcher:
    """An AMQP 1.0 queue: a consumer thread takes every message off it, noting when each arrived.

    The queue must exist (the source address is RabbitMQ's ``/amq/queue/NAME``). The delivery time is when this
    consumer received the message: the broker's hand-over adds a little to the forwarder's. When the broker goes
    away the consumer connects again until it is closed. A message the broker hands over again because this
    consumer's acceptance was lost with the connection (``first_acquirer`` false) is the consumer's own
    redelivery, not the adaptor's: it is counted apart (:attr:`broker_redeliveries`).
    """

    def __init__(self, url: str, queue: str, username: str, password: str) -> None:
        self.url, self.queue, self.username, self.password = url, queue, username, password
        self._arrivals: dict[str, float] = {}
        self._copies: Counter[str] = Counter()
        self.broker_redeliveries = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._consume, name="consumer", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"consumer did not start: {self.error}")

    def delivered(self, message_ids: set[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = {m: self._arrivals[m] for m in message_ids if m in self._arrivals}
            if len(found) == len(message_ids) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def copies(self) -> Counter[str]:
        """MessageID -> copies received (the consumer's own redeliveries not counted)."""
        with self._lock:
            return Counter(self._copies)

    def duplicates(self) -> int:
        with self._lock:
            return sum(count - 1 for count in self._copies.values())

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(10)

    def _consume(self) -> None:
        while not self._stopping.is_set():
            try:
                self._consume_once()
            except Exception as exc:  # the broker went away: connect again
                self.error = f"{type(exc).__name__}: {exc}"
                self._stopping.wait(0.5)

    def _consume_once(self) -> None:
        from proton import Delivery, Timeout
        from proton.utils import BlockingConnection

        connection = BlockingConnection(
            self.url, timeout=10, user=self.username, password=self.password, allowed_mechs="PLAIN"
        )
        try:
            receiver = connection.create_receiver(f"/amq/queue/{self.queue}", credit=200)
            self._ready.set()
            while not self._stopping.is_set():
                try:
                    message = receiver.receive(timeout=0.5)
                except Timeout:
                    continue
                arrived = time.time()
                properties: dict[str, object] = dict(message.properties or {})
                message_id = str(properties.get("messageId") or message.id)
                with self._lock:
                    if message.first_acquirer is False and message_id in self._copies:
                        self.broker_redeliveries += 1
                    else:
                        self._arrivals.setdefault(message_id, arrived)
                        self._copies[message_id] += 1
                receiver.settle(Delivery.ACCEPTED)
        finally:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing left to save
                connection.close()


# -- one step --------------------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """What one concurrency step measured. Times in milliseconds, rates per second, memory in MiB."""

    mix: str
    concurrency: int
    duration_s: float
    requests: int
    ok: int
    ok_per_s: float
    ok_p50_ms: float
    ok_p99_ms: float
    ok_max_ms: float
    errors: dict[str, int]
    delivered: int
    delivery_p50_ms: float
    delivery_p99_ms: float
    delivery_max_ms: float
    #: From the end of sending until the last message of the step was delivered.
    drain_s: float
    #: Messages delivered per second, from the step's first request to its last delivery.
    delivered_per_s: float
    #: Messages delivered after the end of sending, per second of the drain: the delivery capacity once the
    #: requests stop (delivery threads in ``nhs111 serve`` let requests go first, see adaptor.delivery.activity).
    drained_per_s: float
    duplicates: int
    server_peak_rss_mb: float | None
    loadgen_peak_rss_mb: float | None
    mean_request_kb: float
    #: CPU seconds (user + system) the server process used from the step's first request to its last answer
    #: (``/proc/<pid>/stat``); ``None`` without ``--server-pid``.
    server_cpu_s: float | None = None
    #: CPU seconds this load generator used meanwhile (every thread): it shares the machine's cores.
    loadgen_cpu_s: float = 0.0
    #: Messages answered ``OK`` in the step and delivered before its last answer.
    delivered_in_step: int = 0
    #: Answered ``OK`` but not yet delivered: at the end of the step, and the most at any moment of it.
    backlog_end: int = 0
    backlog_max: int = 0


@dataclass
class _Sender:
    """One keep-alive connection and what was answered on it."""

    host: str
    port: int
    path: str
    ok_at: dict[str, float] = field(default_factory=dict)  # MessageID -> wall-clock time of the OK
    latencies: list[float] = field(default_factory=list)  # seconds, OK answers only
    errors: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    bytes_sent: int = 0

    def run(self, templates: Sequence[Template], until: float, rng: random.Random) -> None:
        connection: http.client.HTTPConnection | None = None
        while time.monotonic() < until:
            message_id, body = rng.choice(templates).fresh()
            if connection is None:
                connection = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_SECONDS)
            started = time.perf_counter()
            try:
                connection.request("POST", self.path, body, {"Content-Type": "text/xml; charset=utf-8"})
                response = connection.getresponse()
                answer = response.read()
                status = response.status
            except (OSError, http.client.HTTPException) as exc:
                self.errors[f"connection: {type(exc).__name__}"] += 1
                connection.close()
                connection = None
                time.sleep(0.01)
                continue
            finally:
                self.requests += 1
                self.bytes_sent += len(body)
            elapsed = time.perf_counter() - started
            if status == 200 and _OK.search(answer):
                self.ok_at[message_id] = time.time()
                self.latencies.append(elapsed)
            else:
                code = _ERROR_CODE.search(answer)
                self.errors[f"HTTP {status} fault {code.group(1).decode()}" if code else f"HTTP {status}"] += 1
            if response.will_close:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()


def run_step(
    url: str,
    templates: Sequence[Template],
    concurrency: int,
    duration: float,
    watcher: DeliveryWatcher,
    *,
    mix: str,
    server_pid: int | None = None,
    seed: int = 0,
) -> StepResult:
    """``concurrency`` closed-loop senders for ``duration`` seconds, then wait for the deliveries."""
    parts = urlsplit(url)
    senders = [_Sender(parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/") for _ in range(concurrency)]
    until = time.monotonic() + duration
    server_cpu_before = process_cpu_seconds(server_pid) if server_pid else None
    loadgen_cpu_before = time.process_time()
    started_wall = time.time()
    threads = [
        threading.Thread(target=s.run, args=(templates, until, random.Random(seed + i)), daemon=True)
        for i, s in enumerate(senders)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ended_wall = time.time()
    elapsed = ended_wall - started_wall
    loadgen_cpu = time.process_time() - loadgen_cpu_before
    server_cpu_after = process_cpu_seconds(server_pid) if server_pid else None
    server_cpu = None
    if server_cpu_before is not None and server_cpu_after is not None:
        server_cpu = server_cpu_after - server_cpu_before

    ok_at: dict[str, float] = {}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    for sender in senders:
        ok_at.update(sender.ok_at)
        latencies.extend(sender.latencies)
        errors.update(sender.errors)
    requests = sum(s.requests for s in senders)
    delivered_at = watcher.delivered(set(ok_at), DELIVERY_TIMEOUT_SECONDS)
    delays = [max(0.0, delivered_at[m] - ok_at[m]) for m in delivered_at]
    last_delivery = max(delivered_at.values(), default=ended_wall)
    ms = [latency * 1000 for latency in latencies]
    delivered_in_step, backlog_end, backlog_max = backlog(ok_at, delivered_at, ended_wall)
    return StepResult(
        mix=mix,
        concurrency=concurrency,
        duration_s=round(elapsed, 3),
        requests=requests,
        ok=len(ok_at),
        ok_per_s=len(ok_at) / elapsed if elapsed else 0.0,
        ok_p50_ms=percentile(ms, 0.50),
        ok_p99_ms=percentile(ms, 0.99),
        ok_max_ms=max(ms, default=0.0),
        errors=dict(errors),
        delivered=len(delivered_at),
        delivery_p50_ms=percentile(delays, 0.50) * 1000,
        delivery_p99_ms=percentile(delays, 0.99) * 1000,
        delivery_max_ms=max(delays, default=0.0) * 1000,
        drain_s=max(0.0, last_delivery - ended_wall),
        delivered_per_s=len(delivered_at) / (last_delivery - started_wall) if delivered_at else 0.0,
        drained_per_s=_drained_per_s(delivered_at.values(), ended_wall, last_delivery),
        duplicates=watcher.duplicates(),
        server_peak_rss_mb=peak_rss_mb(server_pid) if server_pid else None,
        loadgen_peak_rss_mb=peak_rss_mb(os.getpid()),
        mean_request_kb=sum(s.bytes_sent for s in senders) / max(1, requests) / 1024,
        server_cpu_s=server_cpu,
        loadgen_cpu_s=loadgen_cpu,
        delivered_in_step=delivered_in_step,
        backlog_end=backlog_end,
        backlog_max=backlog_max,
    )


def _drained_per_s(delivered_at: Iterable[float], ended_wall: float, last_delivery: float) -> float:
    after = sum(1 for moment in delivered_at if moment > ended_wall)
    return after / (last_delivery - ended_wall) if after and last_delivery > ended_wall else 0.0


# -- command line ----------------------------------------------------------------------------------------------


def _watcher(args: argparse.Namespace) -> DeliveryWatcher:
    if args.outbox:
        return FolderWatcher(Path(args.outbox))
    if args.amqp_url:
        return QueueWatcher(args.amqp_url, args.amqp_queue, args.amqp_username, args.amqp_password)
    return NoWatcher()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the ITK endpoint, e.g. http://127.0.0.1:8080/report")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--mix", default="110kb", help="'110kb', 'corpus' (every request) or comma-separated names")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the first concurrency, not reported")
    parser.add_argument("--server-pid", type=int)
    parser.add_argument(
        "--outbox", help="the server's dir: target folder (neither this nor --amqp-url: delivery is not measured)"
    )
    parser.add_argument("--amqp-url")
    parser.add_argument("--amqp-queue", default="encounter-report")
    parser.add_argument("--amqp-username", default="guest")
    parser.add_argument("--amqp-password", default="guest")
    args = parser.parse_args(argv)

    if args.mix == "110kb":
        names: list[str] | None = list(MESSAGES_110KB)
    elif args.mix == "corpus":
        names = None
    else:
        names = [name.strip() for name in args.mix.split(",") if name.strip()]
    templates = load_templates(args.corpus, names)
    watcher = _watcher(args)
    watcher.start()
    try:
        if args.warmup > 0:
            run_step(args.url, templates, args.concurrency[0], args.warmup, watcher, mix=args.mix)
        for concurrency in args.concurrency:
            result = run_step(
                args.url,
                templates,
                concurrency,
                args.duration,
                watcher,
                mix=args.mix,
                server_pid=args.server_pid,
                seed=concurrency * 1000,
            )
            print(
                f"{args.mix} c={concurrency}: {result.ok_per_s:.0f} OK/s, p50 {result.ok_p50_ms:.1f} ms, "
                f"p99 {result.ok_p99_ms:.1f} ms, delivered {result.delivered}/{result.ok}, errors {result.errors}",
                file=sys.stderr,
                flush=True,
            )
            print(json.dumps(asdict(result)), flush=True)
    finally:
        watcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
