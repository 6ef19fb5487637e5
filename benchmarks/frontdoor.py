"""The long form of the front door's adversarial suite (issue 12; short form: ``tests/test_front_door.py``).

Each attack against a real ``nhs111 serve`` at the default limits and thread count: :data:`SINGLES` times one at a
time (time to answer; RSS growth: the server's peak during the request less its RSS before it) and
:data:`ROUNDS` rounds of :data:`AT_ONCE` at once (time to answer; the peak RSS of the round). The peak is the
kernel's ``VmHWM``, reset before each measurement (``/proc/PID/clear_refs``). Then the starvation attack: 64 idle
and 64 trickling connections held for :data:`HOLD_SECONDS` from another loopback address while a good client
probes every :data:`PROBE_INTERVAL` seconds, over plain HTTP and over mutual TLS.

:func:`run` returns the "Front door (issue 12)" part of the robustness section of ``docs/benchmarks.md`` (which
``make soak`` writes, ``benchmarks/soak.py``) and whether every attack met the issue's acceptance: the right answer
within 2 s one at a time, RSS growth under 100 MB for one request and a peak under 300 MB for 16 at once; during
starvation every probe answered within 1 s.

The attacks, the raw-socket client, the crowd of connections, the server process and the test PKI are the tests'
own (``tests/attacks.py``, ``tests/server_fixture.py``, ``tests/tls_certs.py``), loaded in place as
:mod:`benchmarks.e2e` loads the broker and database helpers: each attack is defined once.
"""

from __future__ import annotations

import itertools
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adaptor.config import Settings
from adaptor.http.frontdoor import BODY_BUDGET_FACTOR, WORK_BUDGET_FACTOR, WORK_COST_PER_BODY_BYTE
from benchmarks.e2e import load_tests_module
from benchmarks.report import code_version, load_average, machine

SINGLES = 10
ROUNDS = 3
AT_ONCE = 16
HOLD_SECONDS = 20.0
PROBE_INTERVAL = 0.2
IDLE, TRICKLING, HALF_HANDSHAKES = 64, 64, 8
#: The issue's acceptance.
ANSWER_SECONDS = 2.0
PROBE_SECONDS = 1.0
GROWTH_LIMIT_MB = 100.0
PEAK_LIMIT_MB = 300.0
#: Generous: a hang shows as a missing answer, not as a stuck benchmark.
TIMEOUT_SECONDS = 60.0
#: A probe during starvation not answered within this counts as failed.
PROBE_TIMEOUT_SECONDS = 5.0
#: Bodies of the maximum size sent but for their last byte, then stalled, from one address.
STALLED_BODIES = 4
#: The starvation servers let a connection wait this long for its headers (default 15 s), so that the crowd is
#: held for the whole run rather than let go and reconnected.
STARVATION_HEADER_TIMEOUT = "60"


def _attacks() -> Any:
    return load_tests_module("attacks", "pem111_bench_attacks")


def _fixture() -> Any:
    return load_tests_module("server_fixture", "pem111_bench_server_fixture")


# -- the attacks -------------------------------------------------------------------------------------------------


@dataclass
class Attack:
    """A hostile request (``make`` gives the bytes, or pieces, to send each time) and the answer it must get."""

    name: str
    make: Callable[[], bytes | Iterable[bytes]]
    expected: str  # for the report
    judge: Callable[[Any], bool]  # the reply is the right answer


def attack_list(folder: Path, limit: int) -> list[Attack]:
    a = _attacks()
    fifo = folder / "subset.dtd"
    os.mkfifo(fifo)
    utf16, utf32 = a.WIDE_ENCODINGS[0], a.WIDE_ENCODINGS[3]

    def fault(text: str, diagnostic: str = "") -> Callable[[Any], bool]:
        def judge(reply: Any) -> bool:
            found = reply.first.fault() if reply.responses else None
            return found is not None and (found.code, found.text) == ("1000", text) and diagnostic in found.diagnostic

        return judge

    def refused(status: int) -> Callable[[Any], bool]:
        return lambda reply: reply.status == status and reply.closed and len(reply.responses) == 1 and not reply.rest

    def fixed(raw: bytes) -> Callable[[], bytes]:
        return lambda: raw

    element_bomb, comment_bomb = a.post(a.element_bomb()), a.post(a.comment_bomb())
    elements, text = a.post(a.plain_elements()), a.post(a.plain_text())
    within_twice, beyond_twice = a.plain_text(limit + limit // 2), a.plain_text(2 * limit + limit // 2)
    framings = itertools.cycle(a.SMUGGLING.values())
    declared = b"POST /report HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n"
    return [
        Attack(f"gzip bomb: 12 million empty elements ({len(element_bomb) // 1000} KB)", fixed(element_bomb),
               "fault 1000 Payload could not be decoded", fault(a.NOT_DECODED, "limit")),
        Attack(f"valid CDA padded with 6 million comments ({len(comment_bomb) // 1000} KB)", fixed(comment_bomb),
               "fault 1000 Payload could not be decoded", fault(a.NOT_DECODED, "limit")),
        Attack("10 MB of empty elements in soap:Body", fixed(elements),
               "fault 1000 This is not a valid XML message", fault(a.NOT_XML, "XML nodes")),
        Attack("one 10 MB text node in soap:Body", fixed(text),
               "fault 1000 MessageId missing (as without it)", fault("MessageId missing")),
        Attack("DOCTYPE in UTF-16 naming a FIFO", fixed(a.post(a.with_doctype(str(fifo), *utf16))),
               "fault 1000 This is not a valid XML message", fault(a.NOT_XML, a.DOCTYPE_REFUSED)),
        Attack("DOCTYPE in UTF-32 naming a FIFO, in a base64 payload",
               fixed(a.post(a.payload_with_doctype(str(fifo), *utf32))),
               "fault 1000 Payload could not be decoded", fault(a.NOT_DECODED, a.DOCTYPE_REFUSED)),
        Attack(f"ambiguous framing ({len(a.SMUGGLING)} kinds in turn), a request hidden after it",
               lambda: next(framings), "400, closed, the hidden request unanswered", refused(400)),
        Attack("body declared over twice the limit (headers only)", fixed(declared % (2 * limit + 1)),
               "413, closed", refused(413)),
        Attack("chunked body of 1.5 times the limit", lambda: a.chunked(within_twice),
               "fault 1000 Message too large", fault(a.TOO_LARGE)),
        Attack("chunked body of 2.5 times the limit", lambda: a.chunked(beyond_twice),
               "413, closed", lambda reply: reply.status == 413 and reply.closed),
    ]  # fmt: skip


def outcome(reply: Any) -> str:
    if not reply.responses:
        return "no answer" + (" (closed)" if reply.closed else "")
    fault = reply.first.fault()
    if fault is not None:
        return f"fault {fault.code} {fault.text}"
    return f"HTTP {reply.status}" + (", closed" if reply.closed else "")


@dataclass
class AttackResult:
    attack: Attack
    outcomes: Counter[str] = field(default_factory=Counter)
    wrong: int = 0
    singles: list[float] = field(default_factory=list)
    concurrent: list[float] = field(default_factory=list)
    growth_mb: list[float] = field(default_factory=list)
    peak_mb: list[float] = field(default_factory=list)

    def record(self, reply: Any, times: list[float]) -> None:
        self.outcomes[outcome(reply)] += 1
        self.wrong += not self.attack.judge(reply)
        times.append(reply.seconds)

    @property
    def passed(self) -> bool:
        return (
            not self.wrong
            and max(self.singles) <= ANSWER_SECONDS
            and max(self.growth_mb) < GROWTH_LIMIT_MB
            and max(self.peak_mb) < PEAK_LIMIT_MB
        )


def measure(server: Any, attack: Attack) -> AttackResult:
    a = _attacks()
    result = AttackResult(attack)
    for _ in range(SINGLES):
        before, _ = server.memory_mb()
        server.reset_peak_memory()
        reply = a.exchange(server.port, attack.make(), timeout=TIMEOUT_SECONDS)
        result.growth_mb.append(server.memory_mb()[1] - before)
        result.record(reply, result.singles)
    for _ in range(ROUNDS):
        requests = [attack.make() for _ in range(AT_ONCE)]
        server.reset_peak_memory()
        with ThreadPoolExecutor(AT_ONCE) as pool:
            replies = list(pool.map(lambda raw: a.exchange(server.port, raw, timeout=TIMEOUT_SECONDS), requests))
        result.peak_mb.append(server.memory_mb()[1])
        for reply in replies:
            result.record(reply, result.concurrent)
    return result


# -- starvation --------------------------------------------------------------------------------------------------


@dataclass
class StarvationResult:
    transport: str
    crowd: str
    connections: int = 0
    held_at_end: int = 0
    health: list[float] = field(default_factory=list)  # seconds, answered 200
    reports: list[float] = field(default_factory=list)  # seconds, answered OK
    failed: list[str] = field(default_factory=list)
    peak_mb: float = 0.0

    @property
    def probes(self) -> int:
        return len(self.health) + len(self.reports) + len(self.failed)

    @property
    def passed(self) -> bool:
        answered = self.health + self.reports
        return (
            not self.failed
            and bool(answered)
            and max(answered) <= PROBE_SECONDS
            and self.held_at_end == self.connections
            and self.peak_mb < PEAK_LIMIT_MB
        )


def starve(server: Any, result: StarvationResult, probe_context: Any, **crowd: Any) -> StarvationResult:
    a = _attacks()
    server.reset_peak_memory()
    with a.Crowd(server.port, source="127.0.0.2", **crowd) as held:
        result.connections = len(held)
        time.sleep(1.0)
        end = time.monotonic() + HOLD_SECONDS
        while time.monotonic() < end:
            started = time.monotonic()
            health = a.exchange(server.port, a.get("/healthz"), context=probe_context, timeout=PROBE_TIMEOUT_SECONDS)
            if health.status == 200:
                result.health.append(health.seconds)
            else:
                result.failed.append(f"/healthz: {health}")
            body, _ = a.good_report()
            report = a.exchange(server.port, a.post(body), context=probe_context, timeout=PROBE_TIMEOUT_SECONDS)
            if report.status == 200 and report.first.ok():
                result.reports.append(report.seconds)
            else:
                result.failed.append(f"report: {report}")
            time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - started)))
        result.held_at_end = held.held()
    result.peak_mb = server.memory_mb()[1]
    return result


# -- the run -----------------------------------------------------------------------------------------------------


def run() -> tuple[str, bool]:
    """Every attack, then starvation over plain HTTP and over mutual TLS; the report part, and whether every
    attack met the issue's acceptance."""
    a, fixture = _attacks(), _fixture()
    tls_certs = load_tests_module("tls_certs", "pem111_bench_tls_certs")
    limit = Settings().max_request_bytes
    started, load_before = time.monotonic(), load_average()
    with tempfile.TemporaryDirectory(prefix="pem111-soak-frontdoor-") as name:
        folder = Path(name)
        server = fixture.start_server(folder / "attacks", **a.ADDRESSING)
        try:
            baseline_mb = server.memory_mb()[0]
            results = []
            for attack in attack_list(folder, limit):
                results.append(measure(server, attack))
                print(_attack_row(results[-1]), flush=True)
            after_mb = server.memory_mb()[0]
        finally:
            server.stop()

        starvation = []
        slow_headers = {"PEM111_SERVER_HEADER_TIMEOUT_SECONDS": STARVATION_HEADER_TIMEOUT}
        plain = fixture.start_server(folder / "starve", **a.ADDRESSING, **slow_headers)
        try:
            crowd = f"{IDLE} idle, {TRICKLING} trickling"
            starvation.append(
                starve(plain, StarvationResult("plain HTTP", crowd), None, idle=IDLE, trickling=TRICKLING)
            )
            print(_starvation_row(starvation[-1]), flush=True)
            crowd = f"{STALLED_BODIES} bodies of {limit // (1024 * 1024)} MiB but for their last byte"
            starvation.append(
                starve(
                    plain,
                    StarvationResult("plain HTTP", crowd),
                    None,
                    idle=0,
                    trickling=0,
                    stalled_bodies=STALLED_BODIES,
                    body_length=limit,
                )
            )
            print(_starvation_row(starvation[-1]), flush=True)
        finally:
            plain.stop()

        pki = tls_certs.make_tls_pki(folder / "pki")
        good = fixture.ClientTls(pki.ca_cert, pki.good.cert, pki.good.key)
        unlisted = fixture.ClientTls(pki.ca_cert, pki.unlisted.cert, pki.unlisted.key)
        tls = fixture.start_server(
            folder / "starve-tls",
            tls=good,
            PEM111_TLS_CERT=str(pki.server_cert),
            PEM111_TLS_KEY=str(pki.server_key),
            PEM111_TLS_CLIENT_CA=str(pki.ca_cert),
            PEM111_TLS_CRL=str(pki.crl),
            PEM111_TLS_CLIENT_SUBJECTS=tls_certs.CLIENT_DN,
            **a.ADDRESSING,
            **slow_headers,
        )
        try:
            crowd = f"{IDLE} idle, {TRICKLING} trickling, {HALF_HANDSHAKES} half handshakes"
            starvation.append(
                starve(
                    tls,
                    StarvationResult("mutual TLS", crowd),
                    good.context(),
                    idle=IDLE,
                    trickling=TRICKLING,
                    contexts=[good.context(), unlisted.context()],
                    half_handshakes=HALF_HANDSHAKES,
                )
            )
        finally:
            tls.stop()
        print(_starvation_row(starvation[-1]), flush=True)

    passed = all(r.passed for r in results) and all(s.passed for s in starvation)
    attack_header = (
        f"| attack | answer (all {SINGLES + ROUNDS * AT_ONCE}) | one at a time: median / max "
        f"| {AT_ONCE} at once: median / max | RSS growth for one (max) | peak RSS, {AT_ONCE} at once (max) | verdict |"
    )
    starvation_header = (
        "| transport | attacking connections | held at the end | probes answered | `/healthz`: median / max "
        "| good report: median / max | peak RSS | verdict |"
    )
    elapsed = time.monotonic() - started
    in_work = WORK_BUDGET_FACTOR // WORK_COST_PER_BODY_BYTE
    text = f"""### Front door (issue 12)

Measured by `benchmarks/frontdoor.py` (in `make soak`; alone: `python -m benchmarks.soak --only frontdoor`) on
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min, code {code_version()}. Machine: {machine()}. Load
average (1/5/15 min) before: {load_before}; after: {load_average()}. Short form in `make test`:
`tests/test_front_door.py`. Acceptance (issue 12): **{"met" if passed else "not met"}**.

**Attacks.** One `nhs111 serve` at the default limits (`PEM111_MAX_REQUEST_BYTES` {limit // (1024 * 1024)} MiB,
{Settings().server_threads} request threads), RSS {baseline_mb:.0f} MB after start-up. Each attack {SINGLES} times
one at a time, then {ROUNDS} rounds of {AT_ONCE} at once, each request on a new connection; the time to answer runs
from connecting to the complete answer. RSS growth for one: the server's peak RSS during the request (`VmHWM`, reset
before it) less its RSS before it; peak for 16 at once: `VmHWM` over a round. RSS once all had run:
{after_mb:.0f} MB (heap kept for reuse after the 10 MB bodies; more rounds do not raise it). The issue's bounds: the
right answer, within {ANSWER_SECONDS:.0f} s one at a time, growth under {GROWTH_LIMIT_MB:.0f} MB, peak under
{PEAK_LIMIT_MB:.0f} MB. The times {AT_ONCE} at once are for information: the
requests queue for the {Settings().server_threads} request threads, the body budget and the work budget (which
admit at most {BODY_BUDGET_FACTOR} bodies of the maximum size in memory and about {in_work} such requests in work
at once), and for the machine's cores.

{attack_header}
|---|---|---:|---:|---:|---:|---|
{chr(10).join(_attack_row(r) for r in results)}

**Starvation.** {IDLE} idle connections and {TRICKLING} trickling ones (a byte every 0.5 s, half in their headers,
half in a body declared 8 MB long) from 127.0.0.2, held for {HOLD_SECONDS:.0f} s; meanwhile, every
{PROBE_INTERVAL} s, a good client on 127.0.0.1 asks for `/healthz` and sends a good report (fresh MessageID), each on
a new connection (over mutual TLS with a full handshake). Over mutual TLS half the idle connections never start a
handshake, and the others, like the trickling ones in their headers, alternate between an allowed certificate and
one of the trusted CA whose subject is not on `PEM111_TLS_CLIENT_SUBJECTS`; {HALF_HANDSHAKES} more send half a
ClientHello. `PEM111_SERVER_HEADER_TIMEOUT_SECONDS={STARVATION_HEADER_TIMEOUT}` (default 15), so that the server
lets none of them go during the run. Last, {STALLED_BODIES} connections that each send a body of the maximum size
but for its last byte, and stall: the bodies of one address hold at most two thirds of the body budget, so the
server stops reading the later ones and the good client's report still finds room. The issue's bound: every
probe answered within {PROBE_SECONDS:.0f} s; a probe not answered within
{PROBE_TIMEOUT_SECONDS:.0f} s counts as failed.

{starvation_header}
|---|---|---:|---:|---:|---:|---:|---|
{chr(10).join(_starvation_row(s) for s in starvation)}
"""
    failures = [f"{s.transport}, {s.crowd}: {problem}" for s in starvation for problem in s.failed[:3]]
    if failures:
        text += "\nProbes that failed (the first three of each run):\n\n" + "\n".join(f"- `{f}`" for f in failures)
    return text, passed


def _ms(seconds: Iterable[float]) -> str:
    values = list(seconds)
    if not values:
        return "—"
    return f"{statistics.median(values) * 1000:.0f} / {max(values) * 1000:.0f} ms"


def _verdict(passed: bool) -> str:
    return "met" if passed else "**not met**"


def _attack_row(result: AttackResult) -> str:
    answers = ", ".join(f"{text}: {count}" for text, count in result.outcomes.most_common())
    if result.wrong:
        answers += f" (**{result.wrong} wrong**; want {result.attack.expected})"
    return (
        f"| {result.attack.name} | {answers} | {_ms(result.singles)} | {_ms(result.concurrent)} "
        f"| {max(result.growth_mb):.0f} MB | {max(result.peak_mb):.0f} MB | {_verdict(result.passed)} |"
    )


def _starvation_row(result: StarvationResult) -> str:
    answered = len(result.health) + len(result.reports)
    return (
        f"| {result.transport} | {result.crowd} | {result.held_at_end} / {result.connections} "
        f"| {answered} / {result.probes} | {_ms(result.health)} | {_ms(result.reports)} | {result.peak_mb:.0f} MB "
        f"| {_verdict(result.passed)} |"
    )
