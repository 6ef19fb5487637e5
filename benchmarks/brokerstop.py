"""Broker stopped under load (issue 13): the long form of ``tests/test_broker_stop.py``, in ``make soak``.

    python -m benchmarks.soak --only brokerstop [--rate 50] [--stops 3] [--outage 15]

Three ``nhs111 serve`` replicas on one PostgreSQL database (a private server: :mod:`tests.postgres`) deliver over
AMQP 1.0 to one queue of a private RabbitMQ node (:mod:`tests.brokers`). Sender threads stream corpus messages at
about ``rate`` messages a second to the replicas in turn, each message resent unchanged (to the next replica)
until it is answered ``OK`` (:class:`benchmarks.crash.Stream`). Meanwhile RabbitMQ is stopped gracefully and
started again ``stops`` times, ``between`` seconds of service apart and ``outage`` seconds down each time. Each
replica's sends are in flight at the moment the broker closes the connections, and a stop often comes while the
replicas drain the previous outage's backlog, when their connections are busiest.

Once every stored message is delivered, the queue is read to the end: every copy the broker kept, read once (a
consumer reading during the run would see its own redeliveries whenever the broker lost its acknowledgements).
The run passes when no message answered ``OK`` is missing and every copy beyond the first of a MessageID is one
the store lists for that message among ``possible_redeliveries()`` (an interrupted or in-doubt attempt), so that
the store's count of possible copies is an upper bound of the copies the consumer must drop.

Two cases: 4 delivery threads per replica (``PEM111_DELIVERY_WORKERS=4``) and the defaults (2), both with the
default lease and retry settings. The messages are the corpus's smaller ones (20-35 KB), so that three replicas
accept 50 a second on a machine of two cores: what is measured is the broker's outage, not conversion.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import e2e
from benchmarks.crash import SETTLE_TIMEOUT_SECONDS, Pacer, RobustnessResult, Stream, _account, _backlog, _wait_settled
from benchmarks.load import load_templates
from benchmarks.report import code_version, load_average, machine

REPLICAS = 3
SENDERS = 16
#: The corpus's smaller requests (20-35 KB): see the module docstring.
SMALL_MESSAGES = (
    "encompassing-encounter-effective-time-high-value-null",
    "conformance-example-adastra-original",
    "ic24-itk-ooh-referral-dx06",
)
#: (name, settings) of each case.
CASES: tuple[tuple[str, dict[str, str]], ...] = (
    ("4 delivery threads per replica", {"PEM111_DELIVERY_WORKERS": "4"}),
    ("defaults (2 delivery threads per replica)", {}),
)


@contextlib.contextmanager
def private_postgres() -> Iterator[Any]:
    """A private PostgreSQL server (``tests/postgres.py``) for the duration of the block."""
    server = e2e.load_tests_module("postgres", "pem111_bench_postgres").start_private_postgres()
    try:
        yield server
    finally:
        server.close()


def broker_stop_run(
    corpus: Path,
    *,
    name: str,
    settings: dict[str, str],
    broker: Any,
    database_url: str,
    rate: float,
    stops: int,
    outage_seconds: float,
    between_seconds: float,
) -> RobustnessResult:
    """One case: the replicas under load at ``rate``, the broker stopped ``stops`` times; see the module docstring."""
    templates = load_templates(corpus, SMALL_MESSAGES)
    result = RobustnessResult(f"{REPLICAS} replicas, {name}: RabbitMQ stopped {stops}× under {rate:g} msg/s")
    queue = broker.unique_queue("brokerstop")
    broker.declare_queue(queue)
    amqp = {
        "PEM111_DATABASE_URL": database_url,
        "PEM111_FORWARD_TARGET": broker.url,
        "PEM111_AMQP_QUEUE_NAME": queue,
        "PEM111_AMQP_PROTOCOL": "1.0",
        "PEM111_AMQP_USERNAME": broker.username,
        "PEM111_AMQP_PASSWORD": broker.password,
        "PEM111_LOG_LEVEL": "warning",
    }
    ports = [e2e.free_port() for _ in range(REPLICAS)]
    stream = Stream(ports, templates, Pacer(rate))
    servers: list[e2e.Process] = []
    with tempfile.TemporaryDirectory(prefix="pem111-brokerstop-") as temporary:
        folder = Path(temporary)
        try:
            for index, port in enumerate(ports):  # all at once: they also race to create the schema
                env = e2e.server_env(folder / f"replica-{index}", port, corpus, **amqp, **settings)
                servers.append(e2e.start("serve", env, folder / f"replica-{index}.log"))
            for server, port in zip(servers, ports, strict=True):
                e2e.wait_until_serving(server, port)
            started = time.monotonic()
            stream.start(SENDERS)
            for _ in range(stops):
                time.sleep(between_seconds)
                broker.stop()
                time.sleep(outage_seconds)
                broker.start()
            time.sleep(between_seconds)
            stream.stop()
            stopped, streamed = time.time(), time.monotonic() - started
            result.backlog = _backlog(database_url)
            result.drain_s = _wait_settled(database_url, SETTLE_TIMEOUT_SECONDS) - stopped
            _account(result, stream, read_queue(broker, queue), database_url)
            result.detail = (
                f"{result.answered_ok / streamed:.0f} OK/s over {streamed:.0f} s; "
                f"{result.in_doubt_attempts} in-doubt attempts"
            )
        except (RuntimeError, TimeoutError) as exc:
            stream.stop()
            result.error = str(exc).splitlines()[0]
        finally:
            for server in servers:
                server.stop()
            with contextlib.suppress(Exception):
                broker.delete_queue(queue)
    return result


def read_queue(broker: Any, queue: str, batch: int = 500) -> Counter[str]:
    """Take every message off ``queue`` (a batch at a time, accepting each): ``messageId`` -> copies."""
    copies: Counter[str] = Counter()
    while (depth := broker.queue_depth(queue)) > 0:
        received = broker.consume_amqp10(queue, min(depth, batch), timeout=60)
        if not received:
            raise RuntimeError(f"queue {queue} holds {depth} messages and none could be read")
        copies.update(str(message.properties["messageId"]) for message in received)
    return copies


def markdown(results: list[RobustnessResult]) -> str:
    lines = [
        "| run | sent | answered OK | OK only on a resend | delivered | lost | copies at the consumer | duplicates "
        "| in-doubt / interrupted attempts (possible copies) | duplicates not listed | dead letters | backlog "
        "| drain s | verdict | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | | | | | | | | | | | | | **not completed** | {r.error} |")
            continue
        lines.append(
            f"| {r.name} | {r.sent} | {r.answered_ok} | {r.resent_ok} | {r.delivered} | {r.lost} "
            f"| {r.copies_at_target} | {r.duplicates} | {r.in_doubt_attempts} / {r.interrupted_attempts} "
            f"| {r.unlisted_duplicates} | {r.dead_letters} | {r.backlog} | {r.drain_s:.1f} "
            f"| {'passed' if r.passed else '**failed**'} | {r.detail} |"
        )
    return "\n".join(lines)


def run(
    corpus: Path, *, rate: float = 50.0, stops: int = 3, outage: float = 15.0, between: float = 10.0
) -> tuple[str, bool]:
    """Every case on one private broker and PostgreSQL server (a fresh database each); the markdown part of
    ``docs/benchmarks.md`` and whether every case passed."""
    started, load_before = time.monotonic(), load_average()
    results: list[RobustnessResult] = []
    with tempfile.TemporaryDirectory(prefix="pem111-brokerstop-rabbitmq-") as folder:
        try:
            with e2e.private_rabbitmq(Path(folder)) as broker, private_postgres() as postgres:
                for name, settings in CASES:
                    results.append(
                        broker_stop_run(
                            corpus,
                            name=name,
                            settings=settings,
                            broker=broker,
                            database_url=postgres.new_database(),
                            rate=rate,
                            stops=stops,
                            outage_seconds=outage,
                            between_seconds=between,
                        )
                    )
                    print(markdown(results[-1:]), flush=True)
        except Exception as exc:  # no RabbitMQ or PostgreSQL here: reported, not hidden
            results.append(RobustnessResult("broker stopped under load", error=f"{type(exc).__name__}: {exc}"))
    command = f"python -m benchmarks.soak --only brokerstop --rate {rate:g} --stops {stops} --outage {outage:g}"
    text = f"""### Broker stopped under load (issue 13)

`{command}` ({(time.monotonic() - started) / 60:.1f} min, code {code_version()}; machine: {machine()}; load average
(1/5/15 min) before: {load_before}, after: {load_average()}). Short form in `make test`: `tests/test_broker_stop.py`.

{REPLICAS} `nhs111 serve` replicas on one PostgreSQL database deliver over AMQP 1.0 to one queue of a private
RabbitMQ node (`benchmarks/brokerstop.py`). {SENDERS} sender threads send corpus messages of 20-35 KB to the
replicas in turn, offered at {rate:g} a second (the notes give the rate answered `OK`: fewer when the machine
is busy), each resent unchanged (to the next replica) until answered `OK`;
RabbitMQ is stopped gracefully {stops} times, {between:g} s of service apart, for {outage:g} s each (plus its
start-up, about 6 s), with the default lease (120 s) and retry settings. Once everything stored is delivered the
queue is read to the end. **Lost**: answered `OK` and not in the queue. **Duplicates**: copies beyond one per
MessageID. **Possible copies**: the attempts the store's `possible_redeliveries()` lists (written, no answer; or
never finished). **Duplicates not listed**: copies beyond one of a MessageID beyond the attempts listed for it,
which must be 0: the store's count is an upper bound of what the consumer drops by `messageId`. **Backlog**:
stored, not yet delivered, when the stream stopped; **drain**: from then until everything was delivered.

{markdown(results)}
"""
    return text, bool(results) and all(r.passed for r in results)
