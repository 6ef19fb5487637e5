"""Search at scale (issue 15): a store of many synthetic messages, and the console's search timed on it.

    python -m benchmarks.search [--messages N] [--rounds N] [--only sqlite|postgresql] [--out FILE]

(also ``python -m benchmarks.run --only search [--search-messages N]``; ``make bench`` runs it with the rest).

The generator writes rows straight into ``messages``, ``outbox`` and ``message_index`` in bulk (SQLite:
``executemany`` in one transaction per batch; PostgreSQL: ``COPY``), as the store would have after a year of
referrals: received times spread over 365 days, 95 % delivered and the rest pending, dead-lettered or rejected,
synthetic patients (NHS numbers in the 999 test range, names made of syllables, dates of birth, postcodes),
dispositions, senders and recipients. The request and Bundle of each row are small placeholders (a real store's
are 50-200 KB each, which only the 25 rows of a page are read from). The store's own schema (its migrations) and
its own queries are used: nothing here is specific to the benchmark.

One search is what the console's list page and the API do for it: the counts per state of what it finds (the
state tabs, and the total) and its first page of 25, newest first. Timed (wall clock, after warm-up rounds) for
``--rounds`` searches each by NHS number (a patient's), by name prefix (the first three letters of a patient's
family name, so common names are searched for as often as they occur) and by date range (one day), on SQLite
(a file in a temporary folder) and on PostgreSQL (a fresh database on 127.0.0.1:5432, dropped afterwards, as
:mod:`benchmarks.e2e` makes them). Target: p95 under 300 ms each.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from adaptor.store import MessageQuery, MessageStore, Status, message_index, messages, outbox
from adaptor.store.index import INDEX_VERSION, fold_name
from benchmarks.report import code_version, load_average, replace_section

ROOT = Path(__file__).resolve().parents[1]
TARGET_P95_MS = 300.0
PAGE_SIZE = 25
BATCH = 20_000
#: One row of each table is this much of a placeholder request.
RAW = b"<synthetic request/>" * 16

_ONSETS = (
    "b", "bl", "br", "c", "ch", "cl", "cr", "d", "dr", "f", "fl", "fr", "g", "gr", "h", "j", "k", "l", "m", "n",
    "p", "pr", "r", "s", "sh", "sm", "st", "t", "th", "tr", "v", "w", "wh", "y", "z",
)
_VOWELS = (
    "a", "e", "i", "o", "u", "ai", "ea", "ee", "oo", "ou", "y",
)
_CODAS = (
    "b", "ck", "d", "ff", "g", "l", "ll", "m", "n", "nd", "ng", "p", "r", "rd", "rn", "rs", "s", "ss", "st", "t",
    "th", "tt", "w", "x",
)
#: How unequal surnames are: the n-th commonest is 1/n^ZIPF as frequent as the commonest. With 20,000 names this
#: gives the commonest about 1.1 % of patients (Smith is about 1.2 % in England), the hundred commonest 13.5 %.
ZIPF = 0.65
NAMES = 20_000
_DISPOSITIONS = tuple((f"DX{n:02d}", f"Synthetic disposition {n}") for n in range(1, 41))
_STATES = ((Status.DELIVERED, 0.95), (Status.PENDING, 0.02), (Status.DEAD_LETTER, 0.02), (Status.REJECTED, 0.01))
_INTERACTION = "urn:nhs-itk:interaction:primaryOutofHourRecipientNHS111CDADocument-v2-0"


@dataclass
class Population:
    """What the generator made, to draw the searches from."""

    nhs_numbers: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    start: datetime = field(default_factory=lambda: datetime.now(UTC))


def _names(rng: random.Random, count: int) -> list[str]:
    """``count`` different made-up names, commonest first."""
    names: dict[str, None] = {}
    while len(names) < count:
        syllables = rng.randint(1, 3)
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        names[name.capitalize()] = None
    return list(names)


def _cumulative_weights(count: int) -> list[float]:
    total, weights = 0.0, []
    for rank in range(1, count + 1):
        total += 1 / rank**ZIPF
        weights.append(total)
    return weights


def generate_rows(count: int, seed: int = 111) -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """``count`` (messages, outbox, message_index) rows; deterministic for a seed."""
    rng = random.Random(seed)
    families, givens = _names(rng, NAMES), _names(random.Random(seed + 1), NAMES // 10)
    family_weights, given_weights = _cumulative_weights(len(families)), _cumulative_weights(len(givens))
    patients = max(1, count // 2)  # a patient has two referrals on average
    now = datetime.now(UTC)
    start = now - timedelta(days=365)
    states = [state for state, _ in _STATES]
    weights = [weight for _, weight in _STATES]
    for n in range(count):
        record_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        patient = rng.randrange(patients)
        prng = random.Random(patient)  # the same patient: the same name, number, birth date
        [family] = prng.choices(families, cum_weights=family_weights)
        [given] = prng.choices(givens, cum_weights=given_weights)
        received = start + timedelta(seconds=rng.uniform(0, 365 * 86400))
        state = rng.choices(states, weights)[0]
        code, display = rng.choice(_DISPOSITIONS)
        ods = f"XGP{rng.randrange(200):03d}"
        message_id, tracking_id = str(uuid.uuid4()).upper(), str(uuid.uuid4()).upper()
        born = f"{prng.randint(1925, 2024)}-{prng.randint(1, 12):02d}-{prng.randint(1, 28):02d}"
        bundle = None if state is Status.REJECTED else '{"resourceType":"Bundle"}'
        yield (
            {
                "id": record_id, "message_id": message_id, "tracking_id": tracking_id, "digest": "0" * 64,
                "service": "urn:nhs-itk:services:201005:SendNHS111Report-v2-0", "interaction": _INTERACTION,
                "ods_codes": json.dumps([ods]), "dos_ids": "[]", "sender": f"urn:nhs-uk:identity:ods:X1S{n % 20:02d}",
                "received_at": received, "raw": RAW, "bundle": bundle, "updated_at": received,
                "bundle_version": None if bundle is None else 1, "converted_at": None if bundle is None else received,
            },
            {
                "record_id": record_id, "state": state.value, "attempts": 1, "next_attempt_at": received,
                "lease_owner": None, "lease_expires_at": None, "synchronous": 0, "last_error": None,
                "delivered_at": received if state is Status.DELIVERED else None, "replays": 0, "updated_at": received,
            },
            {
                "record_id": record_id, "received_at": received, "indexed": INDEX_VERSION,
                "message_key": message_id.lower(), "tracking_key": tracking_id.lower(), "record_key": record_id,
                "sender_ods": f"X1S{n % 20:02d}", "recipients": f" {ods} ",
                "nhs_number": None if bundle is None else f"999{patient:07d}",
                "family_key": None if bundle is None else fold_name(family),
                "given_key": None if bundle is None else fold_name(given),
                "patient_name": None if bundle is None else f"{given} {family.upper()}",
                "birth_date": None if bundle is None else born, "postcode": f"XS{patient % 90 + 1}{patient % 9}AB",
                "disposition_code": code, "disposition": display, "receiving_service": f"Practice {ods}",
                "effective_at": received, "warnings": None,
            },
        )  # fmt: skip


def fill(store: MessageStore, count: int, progress: Callable[[int], None] | None = None) -> Population:
    """Write ``count`` generated messages into ``store`` (opened, empty); return what to search for.

    The tables' secondary indexes are dropped while the rows go in and built again after (a sorted build, much
    quicker than a million random insertions into each); they are the store's own indexes, as its schema makes
    them."""
    population = Population(start=datetime.now(UTC) - timedelta(days=365))
    batch: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    done = 0
    indexes = [index for table in (messages, outbox, message_index) for index in table.indexes]
    with store.engine.begin() as conn:
        for index in indexes:
            index.drop(conn)
    for rows in generate_rows(count):
        batch.append(rows)
        if rows[2]["nhs_number"] and len(population.nhs_numbers) < 5000:
            population.nhs_numbers.append(rows[2]["nhs_number"])
            population.families.append(rows[2]["family_key"])
        if len(batch) >= BATCH:
            _write(store, batch)
            done += len(batch)
            batch = []
            if progress is not None:
                progress(done)
    if batch:
        _write(store, batch)
    with store.engine.begin() as conn:
        for index in indexes:
            index.create(conn)
    # Fresh statistics for the planner and (PostgreSQL) the visibility map that index-only scans need: what a
    # database in use has from autovacuum, and a table just filled by COPY has not.
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE" if store.is_postgresql else "ANALYZE")
    return population


def _write(store: MessageStore, batch: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]) -> None:
    if store.is_postgresql:
        _copy(store, batch)
        return
    with store.engine.begin() as conn:
        for position, table in enumerate((messages, outbox, message_index)):
            conn.execute(insert(table), [rows[position] for rows in batch])


def _copy(store: MessageStore, batch: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]) -> None:
    """PostgreSQL's ``COPY ... FROM STDIN`` through psycopg, the fastest way in."""
    raw_connection = store.engine.raw_connection()
    try:
        driver = raw_connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            for position, table in enumerate((messages, outbox, message_index)):
                columns = list(batch[0][position])
                with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for rows in batch:
                        copy.write_row([rows[position][c] for c in columns])
        driver.commit()
    finally:
        raw_connection.close()


def search_once(store: MessageStore, query: MessageQuery) -> float:
    """One console search (the state counts, then the first page): its wall-clock time in ms."""
    started = time.perf_counter()
    counts = store.count_by_status_matching(query)
    rows = store.list_messages(where=query, limit=PAGE_SIZE)
    elapsed = (time.perf_counter() - started) * 1000
    assert sum(counts.values()) >= len(rows)
    return elapsed


@dataclass(frozen=True)
class Timing:
    database: str
    kind: str
    samples: list[float]
    found: float  # messages found per search, on average

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]

    @property
    def met(self) -> bool:
        return self.quantile(0.95) < TARGET_P95_MS


def searches(population: Population, rounds: int, seed: int = 7) -> dict[str, list[MessageQuery]]:
    rng = random.Random(seed)
    days = [population.start + timedelta(days=rng.uniform(1, 363)) for _ in range(rounds)]
    return {
        "NHS number": [MessageQuery(nhs_number=rng.choice(population.nhs_numbers)) for _ in range(rounds)],
        "name prefix (3 letters)": [MessageQuery(name=rng.choice(population.families)[:3]) for _ in range(rounds)],
        "date range (1 day)": [MessageQuery(since=d, until=d + timedelta(days=1)) for d in days],
    }


def measure(store: MessageStore, database: str, population: Population, rounds: int) -> list[Timing]:
    timings = []
    for kind, queries in searches(population, rounds).items():
        for query in queries[:3]:  # warm-up: caches, the pool's connections
            search_once(store, query)
        samples = [search_once(store, query) for query in queries]
        found = statistics.mean(store.count_messages(query) for query in queries[:10])
        timings.append(Timing(database, kind, samples, found))
    return timings


@contextmanager
def _database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pem111-search-") as folder:
            yield f"sqlite:///{Path(folder) / 'messages.db'}"
        return
    from benchmarks import e2e

    with e2e.shared_postgres(e2e.postgres_admin_url()) as server:
        url = server.new_database()
        try:
            yield url
        finally:
            server.drop_database(url)


def _progress(kind: str) -> Callable[[int], None]:
    def show(done: int) -> None:
        print(f"\r{kind}: {done} messages written", end="", flush=True)

    return show


def run(count: int, rounds: int, databases: list[str]) -> tuple[list[Timing], dict[str, str]]:
    """Fill each database with ``count`` messages and time the searches; returns the timings and, per database,
    how long the filling took (or why it was not run)."""
    timings: list[Timing] = []
    notes: dict[str, str] = {}
    for kind in databases:
        try:
            with _database(kind) as url:
                store = MessageStore(url)
                try:
                    store.open()
                    started = time.monotonic()
                    population = fill(store, count, _progress(kind))
                    notes[kind] = f"filled in {time.monotonic() - started:.0f} s"
                    print(f"\r{kind}: {count} messages {notes[kind]}", flush=True)
                    timings += measure(store, kind, population, rounds)
                finally:
                    store.close()
        except Exception as exc:  # a database that cannot be had is reported, the other still measured
            notes[kind] = f"not run: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"{kind}: {notes[kind]}", file=sys.stderr)
    return timings, notes


def markdown(timings: list[Timing]) -> str:
    lines = [
        "| database | search | found per search (mean) | p50 ms | p95 ms | max ms | p95 < 300 ms |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for t in timings:
        lines.append(
            f"| {t.database} | {t.kind} | {t.found:,.0f} | {t.quantile(0.5):.1f} | {t.quantile(0.95):.1f} "
            f"| {max(t.samples):.1f} | {'yes' if t.met else '**no**'} |"
        )
    return "\n".join(lines)


def section(count: int, rounds: int, databases: list[str]) -> tuple[str, bool]:
    load_before = load_average()
    timings, notes = run(count, rounds, databases)
    table = markdown(timings)
    print(table, flush=True)
    filled = "; ".join(f"{k}: {v}" for k, v in notes.items())
    text = f"""### Search at scale (issue 15)

Measured by `python -m benchmarks.run --only search` (and `make bench`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC,
code {code_version()}; load average (1/5/15 min) before: {load_before}, after: {load_average()}.

{count:,} synthetic messages generated straight into the store (`benchmarks/search.py`: a year of referrals, 95 %
delivered, about two per patient, made-up names as unequal as real ones, the commonest about 1.1 % of patients;
small placeholder requests and Bundles), the indexes built after the load ({filled}). One search is what the
console's message list and the API do: the counts per state of what it finds and its first page of 25, newest
first. {rounds} searches of each kind, after warm-up, wall clock (2 shared cores: other work on the machine shows
in the figures). Name prefix: the first three letters of a random patient's family name, so common names are
searched as often as they occur.

{table}
"""
    return text, all(t.met for t in timings) and bool(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    text, met = section(args.messages, args.rounds, args.only or ["sqlite", "postgresql"])
    replace_section(args.out, "search", text, within="bench")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
