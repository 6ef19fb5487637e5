"""Sustained delivery: does delivery keep up with acceptance under a long closed-loop load (issue 13)?

The default deployment (delivery threads inside ``nhs111 serve``, folder target), on SQLite and on a fresh
PostgreSQL database (as :mod:`benchmarks.e2e` makes them), with the ``110kb`` mix. Per store, one server:

1. short probe steps at concurrency 1, 2 and 4 (each waits for its deliveries before the next);
2. the highest of those whose ``OK`` p99 stayed under 100 ms (none: the one with the lowest p99, and the report
   says so) runs one long step, 60 s by default.

Over that step, delivered/s (the step's messages delivered before its last answer, per second of the step)
must be at least 0.9 x accepted/s (``OK`` answers per second): then the backlog stays bounded. The backlog
(answered ``OK``, not yet delivered) is reported at the end of the step and at its largest, with the time the
rest took to deliver after the step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import e2e
from benchmarks.load import StepResult

PROBE_CONCURRENCY = (1, 2, 4)
P99_LIMIT_MS = 100.0
#: The target: delivered/s over the step at least this fraction of accepted/s.
TARGET_RATIO = 0.9

#: The default deployment on each store.
CONFIGURATIONS = (
    e2e.Configuration("SQLite + folder"),
    e2e.Configuration("PostgreSQL + folder", store="postgresql"),
)


@dataclass
class SustainedResult:
    configuration: str
    probes: list[StepResult] = field(default_factory=list)
    #: How the concurrency of the long step was chosen (when no probe met the p99 limit).
    chosen_because: str = ""
    step: StepResult | None = None
    error: str | None = None
    not_run: str | None = None

    @property
    def ratio(self) -> float | None:
        """delivered/s over accepted/s during the long step (both over the step's duration)."""
        return self.step.delivered_in_step / self.step.ok if self.step and self.step.ok else None


def choose(probes: list[StepResult]) -> tuple[int, str]:
    """The highest concurrency whose ``OK`` p99 was under the limit without other answers, or else the one with
    the lowest p99 and why."""
    within = [p for p in probes if p.ok_p99_ms < P99_LIMIT_MS and not p.errors and p.ok]
    if within:
        return max(within, key=lambda p: p.concurrency).concurrency, ""
    lowest = min(probes, key=lambda p: p.ok_p99_ms)
    return (
        lowest.concurrency,
        f"p99 under {P99_LIMIT_MS:g} ms at no concurrency: the lowest p99 ({lowest.ok_p99_ms:.0f} ms)",
    )


def run_one(
    configuration: e2e.Configuration,
    corpus: Path,
    probe_duration: float,
    duration: float,
    warmup: float,
    postgres: object,
) -> SustainedResult:
    result = SustainedResult(configuration.name)
    try:
        with e2e.serving(configuration, corpus, postgres=postgres) as served:
            pid = served.server.pid
            result.probes = e2e.run_load(
                served.url, corpus, "110kb", list(PROBE_CONCURRENCY), probe_duration, warmup, pid, served.watch
            )
            if not result.probes:
                raise RuntimeError("the probe steps measured nothing")
            concurrency, result.chosen_because = choose(result.probes)
            print(f"sustained: {configuration.name}: {duration:g} s at concurrency {concurrency}", file=sys.stderr)
            steps = e2e.run_load(served.url, corpus, "110kb", [concurrency], duration, 0.0, pid, served.watch)
            result.step = steps[0] if steps else None
    except RuntimeError as exc:
        result.error = str(exc)
    return result


def run_all(corpus: Path, probe_duration: float, duration: float, warmup: float) -> list[SustainedResult]:
    results: list[SustainedResult] = []
    services = e2e.Services()
    try:
        for configuration in CONFIGURATIONS:
            try:
                needed = {name: services.get(name) for name in configuration.services}
            except e2e.ServiceUnavailable as exc:
                results.append(SustainedResult(configuration.name, not_run=str(exc)))
                continue
            print(f"sustained: {configuration.name}", file=sys.stderr, flush=True)
            results.append(run_one(configuration, corpus, probe_duration, duration, warmup, needed.get("postgresql")))
    finally:
        services.close()
    return results


def markdown(results: list[SustainedResult]) -> tuple[str, bool]:
    """The table of the long steps (with the probes that chose them), and whether every store met the target."""
    lines = [
        "| store | probes: concurrency OK/s (p99 ms) | step concurrency | step s | OK/s | OK p99 ms "
        "| delivered/s in the step | ÷ OK/s | backlog at the end | backlog max | drain after s "
        "| target ≥ 0.9x |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    met = True
    for r in results:
        if r.not_run or r.error or r.step is None:
            why = f"not run: {r.not_run}" if r.not_run else f"not measured: {(r.error or 'no step').splitlines()[0]}"
            lines.append(f"| {r.configuration} | {why} |" + " |" * 9 + " **not measured** |")
            met = False
            continue
        s = r.step
        probes = ", ".join(f"{p.concurrency}: {p.ok_per_s:.0f} ({p.ok_p99_ms:.0f})" for p in r.probes)
        ratio = r.ratio or 0.0
        verdict = "met" if ratio >= TARGET_RATIO else "**missed**"
        met = met and ratio >= TARGET_RATIO
        chosen = f"{s.concurrency}" + (f" ({r.chosen_because})" if r.chosen_because else "")
        lines.append(
            f"| {r.configuration} | {probes} | {chosen} | {s.duration_s:.0f} | {s.ok_per_s:.1f} | {s.ok_p99_ms:.0f} "
            f"| {s.delivered_in_step / s.duration_s:.1f} | {ratio:.2f} | {s.backlog_end} | {s.backlog_max} "
            f"| {s.drain_s:.1f} | {verdict} |"
        )
    return "\n".join(lines), met


def section(corpus: Path, probe_duration: float, duration: float, warmup: float) -> tuple[str, bool]:
    results = run_all(corpus, probe_duration, duration, warmup)
    table, met = markdown(results)
    text = f"""### Sustained delivery (issue 13)

The default deployment (SQLite store, or a fresh database on the machine's PostgreSQL; folder target; 2 delivery
threads inside `nhs111 serve`, which let requests go first for at most `PEM111_DELIVERY_DEFER_SECONDS` per
message), loaded with the `110kb` mix. Per store, one server: probe steps of {probe_duration:g} s at concurrency
{", ".join(map(str, PROBE_CONCURRENCY))} (after a {warmup:g} s warm-up), then one closed-loop step of
{duration:g} s at the highest of them whose `OK` p99 stayed under {P99_LIMIT_MS:g} ms. **delivered/s in the
step**: the step's messages delivered before its last answer, per second of the step; target: at least
{TARGET_RATIO:g}x the `OK`/s of the same step, so that the backlog stays bounded. **backlog**: answered `OK`,
not yet delivered (the folder file's ctime against the `OK` at the client), at the end of the step and at its
largest; **drain after**: until the step's last message was delivered. A message may wait for a quiet moment
for up to the defer period after its acceptance, so a step of T s shows at most about (T - 1)/T: 0.98 for 60 s
(a quick run's short step cannot show 0.9).

{table}
"""
    return text, met
