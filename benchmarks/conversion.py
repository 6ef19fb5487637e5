"""Conversion cost per corpus message, against the cost of merely reading and writing the same data.

For each request/expected-Bundle pair the baseline is: parse the request bytes with lxml, then serialise the
expected Bundle with ``json.dumps``. The adaptor's conversion (without ``fhir.resources`` validation) must stay
within 5x of that baseline for every message (issue 3). Both are timed in the same run, interleaved, so machine
noise affects both alike.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

from adaptor.config import Settings
from adaptor.delivery.conversion import convert

TARGET_RATIO = 5.0


@dataclass(frozen=True)
class ConversionResult:
    name: str
    request_bytes: int
    convert_median_ms: float
    convert_p99_ms: float
    baseline_median_ms: float

    @property
    def ratio(self) -> float:
        return self.convert_median_ms / self.baseline_median_ms


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def corpus_pairs(corpus: Path) -> list[tuple[str, bytes, dict]]:
    pairs = []
    for request in sorted(corpus.glob("*-itk-request.xml")):
        name = request.name.removesuffix("-itk-request.xml")
        expected = corpus / f"{name}-fhir-result.json"
        if expected.exists():
            pairs.append((name, request.read_bytes(), json.loads(expected.read_text())))
    return pairs


def measure(corpus: Path, rounds: int = 60, warmup: int = 5) -> list[ConversionResult]:
    settings = Settings.from_env({})
    results = []
    for name, raw, expected in corpus_pairs(corpus):
        def baseline(raw: bytes = raw, expected: dict = expected) -> None:
            etree.fromstring(raw)
            json.dumps(expected)

        def conversion(raw: bytes = raw) -> None:
            convert(raw, config=settings)

        for _ in range(warmup):
            baseline()
            conversion()
        base_ms, conv_ms = [], []
        for _ in range(rounds):
            base_ms.append(_timed(baseline))
            conv_ms.append(_timed(conversion))
        results.append(
            ConversionResult(
                name=name,
                request_bytes=len(raw),
                convert_median_ms=statistics.median(conv_ms),
                convert_p99_ms=_p99(conv_ms),
                baseline_median_ms=statistics.median(base_ms),
            )
        )
    return results


def markdown(results: list[ConversionResult]) -> str:
    lines = [
        "| message | request KB | conversion median ms | conversion p99 ms | parse + json.dumps median ms "
        "| ratio | target ≤ 5x |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        verdict = "met" if r.ratio <= TARGET_RATIO else "**missed**"
        lines.append(
            f"| {r.name} | {r.request_bytes / 1024:.0f} | {r.convert_median_ms:.2f} | {r.convert_p99_ms:.2f} "
            f"| {r.baseline_median_ms:.2f} | {r.ratio:.2f} | {verdict} |"
        )
    return "\n".join(lines)
