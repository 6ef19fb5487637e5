"""Robustness against hostile and malformed requests: hypothesis-generated cases against a real ``nhs111 serve``.

Every answer must be ``OK`` or a well-formed SOAP 1.1 fault with the right code (see :mod:`hostile` for the
families and what each must get), within 2 s, never a 5xx without a fault; the server's memory must stay bounded
and it must still accept a valid message afterwards.

Short form (``make test``): ``SOAK_HOSTILE_CASES`` cases, default 200, the same ones every run under CI; the first
problem fails the test (hypothesis then shrinks the case). Long form (``make soak``): 5,000 or more, new ones each
run, with ``SOAK_REPORT=FILE``: every case runs, problems are collected (each failing request saved under
``tests/artifacts/hostile/``), the counts go to FILE as JSON for ``docs/benchmarks.md``, and the test fails at the
end if there was any.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hostile import MAX_SECONDS, Case, Expect, bases_from, cases, judge, refreshed, send
from hypothesis import HealthCheck, given, settings
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from server_fixture import RunningServer, corpus_addresses, require_corpus, start_server

CASES = int(os.environ.get("SOAK_HOSTILE_CASES", "200"))
REPORT = os.environ.get("SOAK_REPORT")
MAX_REQUEST_BYTES = 1_000_000  # the 437 KB repeat-caller request fits; oversized cases stay around 1-2.5 MB
#: The issue's bound for a process; the server must stay under it whatever it is sent.
PEAK_RSS_LIMIT_MB = 300
RSS_SAMPLE_EVERY = 250
#: Failing requests are kept here (git-ignored) for reproduction.
ARTIFACTS = Path(__file__).resolve().parent / "artifacts" / "hostile"


def save_failure(case: Case) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{case.kind.replace(':', '-')}-{uuid.uuid4().hex[:8]}.xml"
    path.write_bytes(case.body)
    return path


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    require_corpus()
    addresses = corpus_addresses()  # and the synthetic request's, so that it is accepted too
    running = start_server(
        tmp_path_factory.mktemp("hostile"),
        PEM111_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
        PEM111_ITK_ODS_CODE_LIST=",".join([*addresses.ods_codes, RECIPIENT_ODS]),
        PEM111_ITK_DOS_ID_LIST=",".join([*addresses.dos_ids, RECIPIENT_DOS]),
    )
    yield running
    running.stop()


def test_hostile_requests_get_ok_or_the_right_fault_quickly(server: RunningServer) -> None:
    bases = bases_from(require_corpus(), [to_bytes(build_request())])
    outcomes: Counter[tuple[str, str]] = Counter()
    problems: Counter[str] = Counter()  # long form: "kind: first problem" -> cases
    examples: dict[str, str] = {}  # long form: the same key -> one saved request
    slowest: dict[str, float] = {}
    rss_samples: list[float] = []  # every RSS_SAMPLE_EVERY cases: growth would show a leak
    rss_before = status_mb(server.process.pid, "VmRSS")
    started = time.monotonic()

    @settings(
        max_examples=CASES,
        deadline=None,  # the 2 s limit is judged on the server's answer, not on hypothesis's own timing
        database=None,
        # Under CI the same cases every run (a gate must not flake on a newly drawn case); elsewhere, and in the
        # long form, new cases each run.
        derandomize=bool(os.environ.get("CI")) and REPORT is None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases(bases, MAX_REQUEST_BYTES))
    def check(case: Case) -> None:
        answer = send("127.0.0.1", server.port, "/report", case)
        verdict = judge(case, answer)
        outcomes[(case.kind, verdict.outcome)] += 1
        slowest[case.family] = max(slowest.get(case.family, 0.0), answer.seconds)
        if sum(outcomes.values()) % RSS_SAMPLE_EVERY == 0:
            rss_samples.append(round(status_mb(server.process.pid, "VmRSS"), 1))
        if not verdict.problems:
            return
        if REPORT is None:
            saved = save_failure(case)
            raise AssertionError(f"{case!r}: {'; '.join(verdict.problems)} (request saved as {saved})")
        key = f"{case.kind}: {verdict.problems[0]}"
        problems[key] += 1
        if key not in examples:
            examples[key] = str(save_failure(case))

    check()

    elapsed = time.monotonic() - started
    assert server.process.poll() is None, "the server died"
    with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=MAX_SECONDS) as health:
        assert health.status == 200
    # Still accepting: a valid corpus message right after the hostile run.
    valid = Case("valid", "valid", refreshed(bases[0]), Expect.OK_OR_CLIENT_FAULT)
    after = send("127.0.0.1", server.port, "/report", valid)
    assert judge(valid, after).outcome == "OK", after.body[:500]
    peak = status_mb(server.process.pid, "VmHWM")
    summary = {
        "cases": sum(outcomes.values()),
        "seconds": round(elapsed, 1),
        "outcomes": {f"{kind} -> {outcome}": n for (kind, outcome), n in sorted(outcomes.items())},
        "problems": dict(problems),
        "problem_examples": examples,
        "slowest_s": {family: round(seconds, 3) for family, seconds in sorted(slowest.items())},
        "rss_before_mb": round(rss_before, 1),
        "rss_after_mb": round(status_mb(server.process.pid, "VmRSS"), 1),
        "rss_samples_mb": rss_samples,
        "rss_sample_every": RSS_SAMPLE_EVERY,
        "peak_rss_mb": round(peak, 1),
    }
    print("\nhostile input:", json.dumps(summary, indent=1))
    if REPORT is not None:
        Path(REPORT).write_text(json.dumps(summary, indent=1))
    assert not problems, f"{sum(problems.values())} cases departed from the contract: {dict(problems)}"
    assert peak < PEAK_RSS_LIMIT_MB, f"server peak RSS {peak:.0f} MB"


def test_a_relative_namespace_uri_is_answered_without_an_internal_error(server: RunningServer) -> None:
    # Found by the long form: a byte deletion turned xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" into
    # xmlns:xsi="hte" inside the CDA. Well-formed XML, but canonical XML refuses relative namespace URIs.
    raw = (require_corpus() / "cleric-itk-ooh-referral-dx09-itk-request.xml").read_bytes()
    body = refreshed(raw.replace(b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"', b'xmlns:xsi="hte"', 1))
    case = Case("tree", "tree:relative-namespace", body, Expect.OK_OR_CLIENT_FAULT)
    verdict = judge(case, send("127.0.0.1", server.port, "/report", case))
    assert not verdict.problems, verdict.problems
