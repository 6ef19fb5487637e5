"""``make soak``: the long forms of the robustness suites; writes their section of ``docs/benchmarks.md``.

    python -m benchmarks.soak [--cases N] [--kills N] [--outage SECONDS] [--no-broker] [--out FILE]
    python -m benchmarks.soak --only frontdoor [--out FILE]
    python -m benchmarks.soak --only brokerstop [--rate N] [--stops N] [--outage SECONDS] [--out FILE]

* Hostile input: ``tests/test_soak_hostile.py`` with ``SOAK_HOSTILE_CASES=N`` (default 5,000) hypothesis cases
  against a real server (its short form, 200 cases, runs in ``make test``).
* Crash: :func:`benchmarks.crash.crash_run`, SIGKILLs under load with the folder target and with a private
  RabbitMQ node (short form in ``make test``: ``tests/test_crash.py``).
* Outage: :func:`benchmarks.crash.outage_run`, the target down under load with the default retry settings, for
  the folder and the broker (short form: ``tests/test_delivery_modes.py``).
* Front door: :func:`benchmarks.frontdoor.run`, the attacks of issue 12 (payload bombs, large bodies, DOCTYPEs,
  smuggling, oversized bodies) one at a time and 16 at once, and starvation by idle and trickling connections
  over plain HTTP and mutual TLS (short form: ``tests/test_front_door.py``). Its part of the section has markers
  of its own: ``--only frontdoor`` runs it alone and replaces only that part.
* Broker stopped under load: :func:`benchmarks.brokerstop.run`, three replicas on one PostgreSQL database
  delivering to RabbitMQ over AMQP 1.0 at ``--rate`` messages a second while the broker is stopped ``--stops``
  times for ``--outage`` seconds (short form: ``tests/test_broker_stop.py``). Also a part with markers of its own:
  ``--only brokerstop``. Skipped with ``--no-broker``.

Exit status 1 when any run failed (the file is written all the same).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import brokerstop, crash, e2e, frontdoor
from benchmarks.report import code_version, load_average, machine, marked, replace_section

ROOT = Path(__file__).resolve().parents[1]


def hostile(cases: int) -> tuple[str, bool]:
    """Run the hostile-input test with ``cases`` cases; its summary as markdown, and whether it passed."""
    with tempfile.TemporaryDirectory(prefix="pem111-soak-") as folder:
        report = Path(folder) / "hostile.json"
        env = {**os.environ, "SOAK_HOSTILE_CASES": str(cases), "SOAK_REPORT": str(report)}
        started = time.monotonic()
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/test_soak_hostile.py", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
        summary = json.loads(report.read_text()) if report.exists() else None
    passed = completed.returncode == 0
    if summary is None:
        failure = "\n".join(completed.stdout.splitlines()[-30:])
        return f"Hostile input: **failed** before its summary ({elapsed:.0f} s):\n\n```\n{failure}\n```\n", False
    families: dict[str, dict[str, int]] = {}
    for key, count in summary["outcomes"].items():
        kind, outcome = key.split(" -> ")
        families.setdefault(kind, {})
        families[kind][outcome] = families[kind].get(outcome, 0) + count
    rows = [
        f"| {kind} | {sum(outcomes.values())} | "
        + ", ".join(f"{outcome}: {n}" for outcome, n in sorted(outcomes.items()))
        + " |"
        for kind, outcomes in sorted(families.items())
    ]
    slowest = ", ".join(f"{family} {seconds * 1000:.0f} ms" for family, seconds in summary["slowest_s"].items())
    samples: list[float] = summary["rss_samples_mb"]
    problems: dict[str, int] = summary["problems"]
    text = f"""### Hostile input

`SOAK_HOSTILE_CASES={cases} python -m pytest tests/test_soak_hostile.py`: {summary["cases"]} hypothesis cases in
{summary["seconds"]:.0f} s against one `nhs111 serve` (1 MB size limit, schema pack on): **{
        "passed" if passed else "failed"
    }**. Every answer was checked: `OK`, or a well-formed SOAP 1.1 fault whose ErrorCode pairs with its
faultcode, the exact fault for malformed XML, DOCTYPEs and oversized bodies, 415 for non-XML media types, 413 (or
the A1 fault) beyond twice the limit; no server fault, no 5xx without a fault, every answer within 2 s.

| mutation | cases | answers |
|---|---:|---|
{chr(10).join(rows)}

Slowest answer per family: {slowest}. Server memory: RSS {summary["rss_before_mb"]:.0f} MB before,
{summary["rss_after_mb"]:.0f} MB after, peak (VmHWM) {summary["peak_rss_mb"]:.0f} MB (limit 300 MB); RSS every
{summary["rss_sample_every"]} cases: {", ".join(f"{mb:.0f}" for mb in samples) or "—"} MB.
"""
    if problems:
        text += (
            "\nCases that departed from the contract (one request of each kept under `tests/artifacts/hostile/`):\n\n"
        )
        text += "| mutation: first problem | cases |\n|---|---:|\n"
        text += "\n".join(f"| {key} | {n} |" for key, n in sorted(problems.items(), key=lambda item: -item[1]))
        text += "\n"
    elif not passed:
        failure = "\n".join(completed.stdout.splitlines()[-20:])
        text += f"\nFailure:\n\n```\n{failure}\n```\n"
    return text, passed


def robustness(corpus: Path, kills: int, outage: float, broker_too: bool) -> tuple[str, bool]:
    results = [
        crash.crash_run(corpus, kills=kills),
        crash.outage_run(corpus, outage_seconds=outage),
    ]
    if broker_too:
        with tempfile.TemporaryDirectory(prefix="pem111-soak-rabbitmq-") as folder:
            try:
                with e2e.private_rabbitmq(Path(folder)) as broker:
                    results.append(crash.crash_run(corpus, kills=max(1, kills // 2), broker=broker))
                    results.append(crash.outage_run(corpus, outage_seconds=outage, broker=broker))
            except Exception as exc:  # no RabbitMQ here: reported, not hidden
                results.append(crash.RobustnessResult("RabbitMQ runs", error=f"broker unavailable: {exc}"))
    table = crash.markdown(results)
    print(table, flush=True)
    text = f"""### Crash and outage

Corpus messages of about 110 KB from sender threads that resend a message unchanged until it is answered `OK`
(`benchmarks/crash.py`). **Crash**: SIGKILL of `nhs111 serve` at random moments 0.5-3 s apart, restart on the same
data folder (1 s lease, fast retries); afterwards every message answered `OK` must be at the target; a copy beyond
the first must be matched by an attempt the store recorded as delivered, interrupted or in doubt for that
MessageID, and by one that `possible_redeliveries()` lists for it (same `messageId`, which consumers deduplicate
on). **Outage**: the target down for {outage:.0f} s during the stream with
the default retry settings (backoff from 1 s, doubling). **Backlog**: messages stored but not yet delivered when the
drain clock starts (crash: the end of the stream; outage: the end of the outage, while the stream goes on for 5 s
more); **drain**: from then until every stored message was delivered. Duplicates count copies beyond one per
MessageID at the target (the folder never writes the same Bundle twice; the queue's consumer sees every copy, its
own redeliveries after a lost acknowledgement excluded).

{table}
"""
    return text, all(r.passed for r in results)


def front_door() -> tuple[str, bool]:
    """:func:`benchmarks.frontdoor.run`; a run that could not finish is reported as failed, not lost."""
    try:
        return frontdoor.run()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # also a missing tool (tests/unavailable.py ends a test with a skip)
        return f"### Front door (issue 12)\n\n**Failed** before its figures: `{type(exc).__name__}: {exc}`\n", False


def broker_stop(corpus: Path, rate: float, stops: int, outage: float) -> tuple[str, bool]:
    """:func:`benchmarks.brokerstop.run`; a run that could not finish is reported as failed, not lost."""
    try:
        return brokerstop.run(corpus, rate=rate, stops=stops, outage=outage)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        failure = f"**Failed** before its figures: `{type(exc).__name__}: {exc}`"
        return f"### Broker stopped under load (issue 13)\n\n{failure}\n", False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "reference")
    parser.add_argument("--cases", type=int, default=5000, help="hostile-input cases (default 5,000)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs with the folder target (half with RabbitMQ)")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the target is down")
    parser.add_argument("--no-broker", action="store_true", help="skip the RabbitMQ runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--rate", type=float, default=50.0, help="messages a second with the broker stopped")
    parser.add_argument("--stops", type=int, default=3, help="times the broker is stopped under load")
    parser.add_argument(
        "--only", choices=["frontdoor", "brokerstop"], help="run only this step, and replace only its part"
    )
    args = parser.parse_args(argv)
    if args.only == "frontdoor":
        frontdoor_text, frontdoor_passed = front_door()
        replace_section(args.out, "frontdoor", frontdoor_text, within="soak")
        print(f"\n{frontdoor_text}\nwritten to {args.out}")
        return 0 if frontdoor_passed else 1
    if not args.corpus.is_dir():
        print(f"error: corpus folder {args.corpus} not found (pass --corpus)", file=sys.stderr)
        return 2
    if args.only == "brokerstop":
        brokerstop_text, brokerstop_passed = broker_stop(args.corpus, args.rate, args.stops, args.outage)
        replace_section(args.out, "brokerstop", brokerstop_text, within="soak")
        print(f"\n{brokerstop_text}\nwritten to {args.out}")
        return 0 if brokerstop_passed else 1

    started, load_before = time.monotonic(), load_average()
    hostile_text, hostile_passed = hostile(args.cases)
    print(hostile_text, flush=True)
    robustness_text, robustness_passed = robustness(args.corpus, args.kills, args.outage, not args.no_broker)
    brokerstop_text, brokerstop_passed = "", True
    if not args.no_broker:
        brokerstop_text, brokerstop_passed = broker_stop(args.corpus, args.rate, args.stops, args.outage)
    frontdoor_text, frontdoor_passed = front_door()
    print(frontdoor_text, flush=True)
    elapsed = time.monotonic() - started
    command = (
        f"python -m benchmarks.soak --cases {args.cases} --kills {args.kills} --outage {args.outage:g} "
        f"--rate {args.rate:g} --stops {args.stops}" + (" --no-broker" if args.no_broker else "")
    )
    section = f"""## Robustness

Measured by `make soak` (`{command}`) on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC in {elapsed / 60:.1f} min, code
{code_version()}. Machine: {machine()}. Load average (1/5/15 min) before: {load_before}; after: {load_average()}.
Short forms in `make test`: `tests/test_soak_hostile.py` (200 cases), `tests/test_crash.py`,
`tests/test_delivery_modes.py`, `tests/test_broker_stop.py`, `tests/test_front_door.py`.

{hostile_text}
{robustness_text}
{marked("brokerstop", brokerstop_text) if brokerstop_text else ""}
{marked("frontdoor", frontdoor_text)}"""
    replace_section(args.out, "soak", section)
    print(f"\nwritten to {args.out} ({elapsed:.0f} s)")
    return 0 if hostile_passed and robustness_passed and brokerstop_passed and frontdoor_passed else 1


if __name__ == "__main__":
    sys.exit(main())
