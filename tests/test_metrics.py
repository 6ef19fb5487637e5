"""``/metrics``: exact values after a known sequence of requests to a real server (``nhs111 serve``), and label
values that never carry an identifier. The label helpers and the per-application registry are tested first."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from itk_factory import NHS_NUMBER, RECIPIENT_DOS, RECIPIENT_ODS, SENDER_ODS, build_request, find, to_bytes
from prometheus_client.parser import text_string_to_metric_families
from server_fixture import RunningServer, start_server

from adaptor.itk.faults import ItkFault
from adaptor.ops.metrics import (
    DEAD_LETTER_REASONS,
    ERROR_CODES,
    NULLIFICATION_EFFECTS,
    OUTCOMES,
    TARGET_KINDS,
    Metrics,
    error_code_label,
    rule_label,
    target_kind,
)
from adaptor.store import Status

DENIED_USER = "CN=DENIED.synthetic.test"
MAX_REQUEST_BYTES = 200_000
UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
TEN_DIGITS = re.compile(r"\d{3}\s?\d{3}\s?\d{4}")

#: Every label a metric may carry, and the values it may take ("le" and "quantile" are Prometheus's own).
ALLOWED_LABEL_VALUES: dict[str, set[str]] = {
    "outcome": {*OUTCOMES, "other"},
    "error_code": {*ERROR_CODES, "none", "other"},
    "target": {*TARGET_KINDS, "other"},
    "reason": {*DEAD_LETTER_REASONS, "other"},
    "state": {status.value for status in Status},
    "effect": {*NULLIFICATION_EFFECTS, "other"},
    "withdrawal": {"queued", "none"},
}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: RunningServer) -> tuple[str, Samples]:
    response = requests.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def post(server: RunningServer, body: bytes, content_type: str = "text/xml; charset=utf-8") -> requests.Response:
    return requests.post(server.report_url, data=body, headers={"Content-Type": content_type}, timeout=30)


def message_id(root: object) -> str:
    return find(root, "wsa:MessageID").text or ""  # type: ignore[arg-type]


def tracking_id(root: object) -> str:
    return find(root, "itk:header").get("trackingid") or ""  # type: ignore[arg-type]


# == in-process ===================================================================================================


def test_label_values_come_from_fixed_sets() -> None:
    assert [error_code_label(code) for code in (None, 1000, 2100, 2200, 3000, 4242)] == [
        "none",
        "1000",
        "2100",
        "2200",
        "3000",
        "other",
    ]
    assert [rule_label(rule) for rule in ("", "C17", "B5", "A1", "uuid:5F0A...", "9990001235")] == [
        "none",
        "C17",
        "B5",
        "A1",
        "other",
        "other",
    ]
    assert target_kind("dir:/var/outbox") == "dir"
    assert target_kind("amqps://broker:5671/queue") == "amqp"
    assert target_kind("https://fhir.example/Bundle") == "http"
    assert target_kind("ftp://elsewhere") == "other"


def test_each_application_counts_in_its_own_registry() -> None:
    one, two = Metrics("dir:/a"), Metrics("dir:/b")
    one.request_answered("fault", 0.01, ItkFault(1000, "Message rejected", rule="C17"))
    one.message_delivered("dir:/a")
    text_one, text_two = one.exposition().decode(), two.exposition().decode()
    assert 'nhs111_requests_total{error_code="1000",outcome="fault",rule="C17"} 1.0' in text_one
    assert 'nhs111_messages_delivered_total{target="dir"} 1.0' in text_one
    assert 'outcome="fault",rule="C17"' not in text_two
    assert 'nhs111_messages_delivered_total{target="dir"} 0.0' in text_two  # exported from the start
    assert "_created" not in text_one  # no timestamp series beside every counter


# == a real server: a known sequence, then exact values ============================================================


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(
        tmp_path,
        PEM111_ITK_ODS_CODE_LIST=RECIPIENT_ODS,
        PEM111_ITK_DOS_ID_LIST=RECIPIENT_DOS,
        PEM111_USERNAME_DENY_LIST=DENIED_USER,
        PEM111_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES),
        # Two attempts, quickly: a blocked target costs one retry, then a dead letter.
        PEM111_DELIVERY_MAX_ATTEMPTS="2",
        PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS="0.05",
        PEM111_DELIVERY_POLL_SECONDS="0.05",
    )
    yield running
    running.stop()


def test_metrics_after_a_known_sequence_of_requests(server: RunningServer) -> None:
    identifiers: list[str] = []

    # 3 messages accepted and delivered to the folder.
    accepted = [build_request() for _ in range(3)]
    for root in accepted:
        assert post(server, to_bytes(root)).status_code == 200
        identifiers += [message_id(root), tracking_id(root)]
    for root in accepted:
        [record] = server.wait_for_status(message_id(root))
        identifiers.append(record.id)

    # 1 identical resend: answered OK, not stored or delivered again.
    assert post(server, to_bytes(accepted[0])).status_code == 200

    # 5 faults: 1000 C17 (recipient not allowed), 1000 A2 twice (not XML), 3000 B13 (username denied) and
    # 1000 A1 (too large, answered by the dispatcher before the SOAP endpoint).
    stranger = build_request(addresses=(("urn:nhs-uk:addressing:ods:XNOWHERE", None),))
    denied = build_request(username=DENIED_USER)
    identifiers += [message_id(stranger), tracking_id(stranger), message_id(denied), tracking_id(denied)]
    for body in (to_bytes(stranger), b"not xml", b"<still not xml", to_bytes(denied), b"x" * (MAX_REQUEST_BYTES + 1)):
        assert post(server, body).status_code == 500

    # 1 refused before SOAP: the wrong media type.
    assert post(server, b"{}", "application/json").status_code == 415

    # 1 message accepted while the outbox folder is a file: one retry, then out of attempts.
    aside = server.outbox.with_name("outbox-aside")
    server.outbox.rename(aside)
    server.outbox.write_text("not a folder")
    doomed = build_request()
    assert post(server, to_bytes(doomed)).status_code == 200
    [dead] = server.wait_for_status(message_id(doomed), Status.DEAD_LETTER)
    identifiers += [message_id(doomed), tracking_id(doomed), dead.id]
    server.outbox.unlink()
    aside.rename(server.outbox)

    text, samples = scrape(server)

    assert value(samples, "nhs111_requests_total", outcome="ok", error_code="none", rule="none") == 5
    assert value(samples, "nhs111_requests_total", outcome="fault", error_code="1000", rule="C17") == 1
    assert value(samples, "nhs111_requests_total", outcome="fault", error_code="1000", rule="A2") == 2
    assert value(samples, "nhs111_requests_total", outcome="fault", error_code="1000", rule="A1") == 1
    assert value(samples, "nhs111_requests_total", outcome="fault", error_code="3000", rule="B13") == 1
    assert value(samples, "nhs111_requests_total", outcome="refused", error_code="none", rule="none") == 1
    requests_total = sum(v for (name, _), v in samples.items() if name == "nhs111_requests_total")
    assert requests_total == 5 + 5 + 1
    assert value(samples, "nhs111_request_duration_seconds_count", outcome="ok") == 5
    assert value(samples, "nhs111_request_duration_seconds_count", outcome="fault") == 5
    assert value(samples, "nhs111_request_duration_seconds_count", outcome="refused") == 1
    assert value(samples, "nhs111_request_duration_seconds_bucket", outcome="ok", le="+Inf") == 5
    assert 0 < value(samples, "nhs111_request_duration_seconds_sum", outcome="ok") < 5 * 30

    assert value(samples, "nhs111_messages_accepted_total") == 4
    assert value(samples, "nhs111_resends_total") == 1
    assert value(samples, "nhs111_messages_delivered_total", target="dir") == 3
    assert value(samples, "nhs111_delivery_retries_total", target="dir") == 1
    assert value(samples, "nhs111_dead_letters_total", reason="out_of_attempts") == 1
    assert value(samples, "nhs111_dead_letters_total", reason="refused") == 0
    assert value(samples, "nhs111_dead_letters_total", reason="conversion_failed") == 0
    # Each request that passed validation converted once, when it arrived (the resend too); the retry sent the
    # stored Bundle.
    assert value(samples, "nhs111_conversion_duration_seconds_count") == 5

    assert value(samples, "nhs111_store_up") == 1
    assert value(samples, "nhs111_outbox_depth") == 0
    assert value(samples, "nhs111_outbox_oldest_age_seconds") == 0
    assert value(samples, "nhs111_outbox_messages", state="dead_letter") == 1
    assert value(samples, "nhs111_outbox_messages", state="pending") == 0
    assert value(samples, "nhs111_outbox_messages", state="rejected") == 0
    assert any(name.startswith("process_") for name, _ in samples)

    # No identifier anywhere: not as a label value, not in a help text.
    for (name, labels), _ in samples.items():
        for label, label_value in labels:
            assert not UUID.search(label_value) and not TEN_DIGITS.search(label_value), (name, label, label_value)
            if label == "rule":
                assert label_value in ("none", "other") or re.fullmatch(r"[A-Z][0-9]{1,2}[a-z]?", label_value)
            elif label not in ("le", "quantile"):
                assert label_value in ALLOWED_LABEL_VALUES[label], (name, label, label_value)
    for secret in (*identifiers, NHS_NUMBER, RECIPIENT_ODS, SENDER_ODS, str(server.outbox)):
        assert secret and secret not in text, secret


def test_the_outbox_gauges_show_a_waiting_message(tmp_path: Path) -> None:
    """A message whose delivery failed and waits for its retry counts in the depth, and its age grows."""
    server = start_server(
        tmp_path,
        PEM111_ITK_ODS_CODE_LIST=RECIPIENT_ODS,
        PEM111_ITK_DOS_ID_LIST=RECIPIENT_DOS,
        PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS="600",
    )
    try:
        server.outbox.parent.mkdir(parents=True, exist_ok=True)
        server.outbox.write_text("not a folder")  # the first attempt fails; the retry is ten minutes away
        waiting = build_request()
        assert post(server, to_bytes(waiting)).status_code == 200
        server.wait_for_status(message_id(waiting), Status.RETRYING)

        _, first = scrape(server)
        time.sleep(1.1)
        _, second = scrape(server)
    finally:
        server.stop()
    assert value(first, "nhs111_outbox_depth") == 1 and value(first, "nhs111_outbox_messages", state="retrying") == 1
    assert value(first, "nhs111_delivery_retries_total", target="dir") == 1
    assert 0 <= value(first, "nhs111_outbox_oldest_age_seconds") < 30
    assert value(second, "nhs111_outbox_oldest_age_seconds") >= value(first, "nhs111_outbox_oldest_age_seconds") + 1
