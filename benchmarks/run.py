"""``make bench``: the conversion, end-to-end and search benchmarks; writes their section of ``docs/benchmarks.md``.

    python -m benchmarks.run [--quick] [--corpus DIR] [--rounds N] [--out FILE] [--no-e2e]
                             [--search-messages N] [--only search]

``--quick``: a fast run for a smoke check (fewer conversion rounds; 3 s load steps at concurrency 1 and 8 with
the ~110 KB messages only; the search on 100,000 messages); its figures are labelled as such. ``--only search``
runs only the search benchmark (:mod:`benchmarks.search`, 1,000,000 messages on SQLite and PostgreSQL, or
``--search-messages N``) and replaces only its part of the section. Exit status 1 when a target is missed (the file is
written all the same), 2 when the corpus is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import conversion, e2e, search
from benchmarks.report import code_version, load_average, machine, marked, replace_section

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    rounds: int  # conversion rounds per message
    mixes: tuple[str, ...]
    concurrency: tuple[int, ...]
    duration: float  # seconds per load step
    search_messages: int  # messages in the store the search benchmark makes


FULL = Plan(rounds=60, mixes=("110kb", "corpus"), concurrency=(1, 4, 8, 16, 32), duration=10.0, search_messages=10**6)
QUICK = Plan(rounds=15, mixes=("110kb",), concurrency=(1, 8), duration=3.0, search_messages=100_000)
SEARCH_DATABASES = ["sqlite", "postgresql"]


def conversion_section(corpus: Path, rounds: int) -> tuple[str, bool]:
    results = conversion.measure(corpus, rounds=rounds)
    table = conversion.markdown(results)
    print(table, flush=True)
    worst = max(results, key=lambda r: r.ratio)
    text = f"""### Conversion (issue 3)

Per corpus message ({rounds} timed rounds after a warm-up, interleaved): the time of `adaptor.convert()`
(CDA to FHIR STU3 Bundle, without `fhir.resources` validation) against the time to parse the same request with
lxml and serialise the expected Bundle with `json.dumps`. Target: conversion within 5x of that baseline for every
message.

{table}

Worst ratio: {worst.ratio:.2f}x ({worst.name}).
"""
    return text, all(r.ratio <= conversion.TARGET_RATIO for r in results)


def e2e_section(corpus: Path, mixes: list[str], concurrency: list[int], duration: float) -> tuple[str, bool]:
    results = e2e.run_all(corpus, mixes=mixes, concurrency=concurrency, duration=duration, warmup=2.0)
    found = e2e.verdicts(results)
    text = f"""### End to end (issue 7)

A real `nhs111 serve` per configuration and message mix (fresh temporary data folder with the SQLite store, or a
fresh database on the machine's PostgreSQL, dropped afterwards; default settings: 8 HTTP threads, 2 delivery
threads, async delivery; the corpus allow-lists; the published schema pack, so CDA schema validation D4-D6 runs,
as with `make run`). Configurations:

{e2e.configurations_markdown()}

The load generator (`python -m benchmarks.load`, a separate process on the same 2 cores) keeps `concurrency`
HTTP/1.1 keep-alive connections busy for {duration:g} s per step (closed loop, after a 2 s warm-up), each request a
corpus message with a fresh MessageID and trackingid. Mixes: `110kb` = primary-emergency (109 KB) and
adastra-itk-ooh-referral-dx06 (126 KB); `corpus` = all nine reference requests (19-427 KB). After each step it
waits until every message answered OK was delivered.

* **OK/s**: answers `OK` per second of the step; **OK p50/p99/max**: their latency at the client.
* **delivered/s**: messages delivered from the step's first request to its last delivery; **OK→delivered**: from
  the OK at the client to the Bundle at the target (the folder file's ctime, or arrival at a consumer of the
  queue); **drain**: from the end of sending until the step's last delivery; **drained/s**: the messages delivered
  after the end of sending per second of the drain. Delivery threads inside `nhs111 serve` let requests go first
  (they wait for a quiet moment, at most `PEM111_DELIVERY_DEFER_SECONDS`, 1 s), so during a step they deliver
  little and the backlog drains after it: drained/s is the delivery capacity, delivered/s the rate under load.
* **duplicates**: copies seen by the consumer beyond one per MessageID (the folder never writes a copy twice).
* **serve peak MB**: the server's VmHWM after the step (it only grows).

{e2e.markdown(results)}

Targets (2 cores):

{e2e.verdict_table(found)}
"""
    return text, all(v.met for v in found if "informational" not in v.target)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "reference")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (figures labelled as quick)")
    parser.add_argument("--rounds", type=int, help="conversion rounds per message (default 60, quick 15)")
    parser.add_argument("--no-e2e", action="store_true", help="the conversion benchmark only")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--search-messages", type=int, help="messages for the search benchmark (default 1,000,000)")
    parser.add_argument("--only", choices=["search"], help="run only this benchmark, and replace only its part")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    search_messages = args.search_messages or plan.search_messages
    if args.only == "search":
        search_text, search_met = search.section(search_messages, 60, SEARCH_DATABASES)
        replace_section(args.out, "search", search_text, within="bench")
        print(f"\nwritten to {args.out}")
        return 0 if search_met else 1
    if not args.corpus.is_dir():
        print(f"error: corpus folder {args.corpus} not found (pass --corpus)", file=sys.stderr)
        return 2
    rounds = args.rounds or plan.rounds

    started, load_before = time.monotonic(), load_average()
    conversion_text, conversion_met = conversion_section(args.corpus, rounds)
    e2e_text, e2e_met = "", True
    if not args.no_e2e:
        e2e_text, e2e_met = e2e_section(args.corpus, list(plan.mixes), list(plan.concurrency), plan.duration)
        print(e2e_text, flush=True)
    search_text, search_met = search.section(search_messages, 60, SEARCH_DATABASES)
    elapsed = time.monotonic() - started
    command = "python -m benchmarks.run" + (" --quick" if args.quick else "") + (" --no-e2e" if args.no_e2e else "")
    section = f"""## Benchmarks{" (quick run: smoke figures only)" if args.quick else ""}

Measured by `make bench` (`{command}`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min, code
{code_version()}.

Machine: {machine()}. Load average (1/5/15 min) before: {load_before}; after: {load_average()} (other work on
the machine at the same time, such as test runs, shows here and slows every figure).

{conversion_text}
{e2e_text}
{marked("search", search_text)}"""
    replace_section(args.out, "bench", section)
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"\nwritten to {shown} ({elapsed:.0f} s)")
    return 0 if conversion_met and e2e_met and search_met else 1


if __name__ == "__main__":
    sys.exit(main())
