"""``make bench``: run every benchmark and write ``docs/benchmarks.md``.

    python -m benchmarks.run [--corpus DIR] [--rounds N] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from . import conversion

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus" / "reference")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"error: corpus folder {args.corpus} not found (pass --corpus)", file=sys.stderr)
        return 2

    results = conversion.measure(args.corpus, rounds=args.rounds)
    table = conversion.markdown(results)
    print(table)
    worst = max(results, key=lambda r: r.ratio)
    report = f"""# Benchmarks

Measured by `make bench` (`python -m benchmarks.run`) on {datetime.now(UTC):%Y-%m-%d}.

Machine: {machine()}.

## Conversion (issue 3)

Per corpus message ({args.rounds} timed rounds after a warm-up, interleaved): the time of `adaptor.convert()`
(CDA to FHIR STU3 Bundle, without `fhir.resources` validation) against the time to parse the same request with
lxml and serialise the expected Bundle with `json.dumps`. Target: conversion within 5x of that baseline for every
message.

{table}

Worst ratio: {worst.ratio:.2f}x ({worst.name}).
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"\nwritten to {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 0 if all(r.ratio <= conversion.TARGET_RATIO for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
