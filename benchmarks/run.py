"""``make bench``: the conversion, end-to-end, accept-CPU, sustained-delivery and search benchmarks; writes their
section of ``docs/benchmarks.md``.

    python -m benchmarks.run [--quick] [--corpus DIR] [--rounds N] [--out FILE] [--only PART ...] [--no-e2e]
                             [--search-messages N]

``--quick``: a fast run for a smoke check (fewer conversion rounds; 3 s load steps at concurrency 1 and 8 with
the ~110 KB messages only; 2 s accept steps; 2 s probes and a 6 s sustained step; the search on 100,000
messages); its figures are labelled as such. ``--only``: run only these parts (``conversion``, ``e2e``,
``accept``, ``sustained``, ``search``) and replace only their parts of the section, each with a line saying when
and how it was run alone; ``--no-e2e`` is ``--only conversion``. ``--search-messages N``: the search benchmark
(:mod:`benchmarks.search`) on N stored messages instead of 1,000,000. Exit status 1 when a target is missed (the
file is written all the same), 2 when the corpus is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import accept, conversion, e2e, search, sustained
from benchmarks.report import code_version, load_average, machine, marked, replace_section

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    rounds: int  # conversion rounds per message
    mixes: tuple[str, ...]
    concurrency: tuple[int, ...]
    duration: float  # seconds per load step
    accept_duration: float  # seconds per accept-CPU load step (concurrency 1 and 4)
    accept_rounds: int  # in-process rounds per message
    probe_duration: float  # seconds per sustained-delivery probe step
    sustained_duration: float  # seconds of the sustained step
    search_messages: int  # messages in the store the search benchmark makes


FULL = Plan(
    rounds=60,
    mixes=("110kb", "corpus"),
    concurrency=(1, 4, 8, 16, 32),
    duration=10.0,
    accept_duration=10.0,
    accept_rounds=100,
    probe_duration=10.0,
    sustained_duration=60.0,
    search_messages=10**6,
)
QUICK = Plan(
    rounds=15,
    mixes=("110kb",),
    concurrency=(1, 8),
    duration=3.0,
    accept_duration=2.0,
    accept_rounds=15,
    probe_duration=2.0,
    sustained_duration=6.0,
    search_messages=100_000,
)
#: The parts of the section, in order; each can be run alone (``--only``).
PARTS = ("conversion", "e2e", "accept", "sustained", "search")
ACCEPT_CONCURRENCY = [1, 4]
SEARCH_DATABASES = ["sqlite", "postgresql"]


def conversion_section(corpus: Path, rounds: int) -> tuple[str, bool]:
    results = conversion.measure(corpus, rounds=rounds)
    table = conversion.markdown(results)
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
  (they wait for a quiet moment, but a message at most `PEM111_DELIVERY_DEFER_SECONDS`, 1 s, after its
  acceptance), so during a step they deliver about a second behind the requests and the rest drains after it:
  drained/s is the delivery capacity once requests stop (see also "Sustained delivery").
* **duplicates**: copies seen by the consumer beyond one per MessageID (the folder never writes a copy twice).
* **serve peak MB**: the server's VmHWM after the step (it only grows).

{e2e.markdown(results)}

Targets (2 cores):

{e2e.verdict_table(found)}
"""
    return text, all(v.met for v in found if "informational" not in v.target)


def measure(part: str, corpus: Path, plan: Plan, rounds: int, search_messages: int) -> tuple[str, bool]:
    """Run one part of the benchmarks: its markdown, and whether its targets were met."""
    if part == "conversion":
        return conversion_section(corpus, rounds)
    if part == "e2e":
        return e2e_section(corpus, list(plan.mixes), list(plan.concurrency), plan.duration)
    if part == "accept":
        return accept.section(corpus, ACCEPT_CONCURRENCY, plan.accept_duration, 2.0, plan.accept_rounds)
    if part == "sustained":
        return sustained.section(corpus, plan.probe_duration, plan.sustained_duration, 2.0)
    if part == "search":
        return search.section(search_messages, 60, SEARCH_DATABASES)
    raise ValueError(f"unknown part {part!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "reference")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run (figures labelled as quick)")
    parser.add_argument("--rounds", type=int, help="conversion rounds per message (default 60, quick 15)")
    parser.add_argument(
        "--only", nargs="+", choices=PARTS, help="run only these parts, and replace only their part of the section"
    )
    parser.add_argument("--no-e2e", action="store_true", help="the conversion benchmark only (--only conversion)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--search-messages", type=int, help="messages for the search benchmark (default 1,000,000)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    search_messages = args.search_messages or plan.search_messages
    if not args.corpus.is_dir():
        print(f"error: corpus folder {args.corpus} not found (pass --corpus)", file=sys.stderr)
        return 2
    rounds = args.rounds or plan.rounds
    only = args.only or (["conversion"] if args.no_e2e else None)
    shown = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out

    started, load_before = time.monotonic(), load_average()
    texts: dict[str, str] = {}
    met = True
    for part in [p for p in PARTS if only is None or p in only]:
        part_started, part_load_before = time.monotonic(), load_average()
        text, part_met = measure(part, args.corpus, plan, rounds, search_messages)
        met = met and part_met
        print(text, flush=True)
        if only is not None:  # run alone: say when and how, and replace only this part
            command = f"python -m benchmarks.run --only {part}" + (" --quick" if args.quick else "")
            text += f"""
*This part was run alone (`{command}`{", smoke figures only" if args.quick else ""}) on
{datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {(time.monotonic() - part_started) / 60:.1f} min, code {code_version()};
load average before: {part_load_before}; after: {load_average()}.*
"""
            replace_section(args.out, part, text, within="bench")
        texts[part] = text
    elapsed = time.monotonic() - started
    if only is None:
        command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
        parts = "\n".join(marked(part, text) for part, text in texts.items())
        section = f"""## Benchmarks{" (quick run: smoke figures only)" if args.quick else ""}

Measured by `make bench` (`{command}`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min, code
{code_version()}.

Machine: {machine()}. Load average (1/5/15 min) before: {load_before}; after: {load_average()} (other work on
the machine at the same time, such as test runs, shows here and slows every figure).

{parts}"""
        replace_section(args.out, "bench", section)
    print(f"\nwritten to {shown} ({elapsed:.0f} s)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
