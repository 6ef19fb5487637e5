"""Nullification end to end, against a running ``nhs111 serve``: the withdrawal of a delivered message arrives at
each kind of target (folder, AMQP 1.0, AMQP 0-9-1, FHIR over HTTP) with the original's resource ids, every status
``entered-in-error``, the nullification as its interaction, and validates as FHIR STU3; a message not yet
delivered is never delivered; a nullification of an unknown message is kept, reported, counted and logged, and
the message arriving after it is never delivered.

The nullification sent is the published ITK-wrapped example, as a 111 sender sends it (``nullifying.py``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from brokers import Received
from fhir_server import FhirServer
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from lxml import etree
from nullifying import (
    EXAMPLE_NHS_NUMBER,
    ITK_EXAMPLE,
    NULLIFY_IUC,
    WITHDRAWN_ID,
    assert_withdraws,
    bundle_of,
    message_id,
    nullification,
    original,
)
from server_fixture import RunningServer, start_server
from waiting import wait_until

from adaptor.delivery.conversion import validate_bundle
from adaptor.store import MessageStore, Status

ADDRESSED = {"PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS, "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS}
TARGETS = ["folder", "amqp-1.0", "amqp-0-9-1", "http"]

Json = dict[str, Any]


def post(server: RunningServer, root: etree._Element) -> None:
    answer = requests.post(
        server.report_url, data=to_bytes(root), headers={"Content-Type": "text/xml; charset=utf-8"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    assert b">OK<" in answer.content


def bundle_versions(server: RunningServer, root: etree._Element) -> list[str]:
    store = MessageStore(server.database_url)
    try:
        [stored] = store.find_by_message_id(message_id(root))
        return [version.bundle for version in store.bundle_versions(stored.id)]
    finally:
        store.close()


def metric(server: RunningServer, line_start: str) -> float:
    text = requests.get(f"{server.base_url}/metrics", timeout=10).text
    [line] = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    return float(line.rsplit(" ", 1)[1])


class Target:
    """A running server delivering to one kind of target, and what that target received."""

    def __init__(self, kind: str, tmp_path: Path, rabbitmq: Any = None, fhir: FhirServer | None = None) -> None:
        self.kind, self.rabbitmq, self.fhir = kind, rabbitmq, fhir
        settings = dict(ADDRESSED)
        if kind.startswith("amqp"):
            self.queue = rabbitmq.unique_queue("nullify")
            settings.update(
                PEM111_FORWARD_TARGET=rabbitmq.url,
                PEM111_AMQP_QUEUE_NAME=self.queue,
                PEM111_AMQP_PROTOCOL=kind.removeprefix("amqp-"),
                PEM111_AMQP_USERNAME=rabbitmq.username,
                PEM111_AMQP_PASSWORD=rabbitmq.password,
            )
        elif kind == "http":
            assert fhir is not None
            settings["PEM111_FORWARD_TARGET"] = fhir.url
        self.server = start_server(tmp_path, **settings)

    def received(self, count: int) -> list[tuple[Json, dict[str, str], str | None]]:
        """(Bundle, the properties or headers it came with, the broker message id) of each message, in order."""
        if self.kind.startswith("amqp"):
            got: list[Received] = self.rabbitmq.consume(self.queue, self.kind.removeprefix("amqp-"), count, timeout=30)
            return [(bundle_of(m.body), {k: str(v) for k, v in m.properties.items()}, m.message_id) for m in got]
        assert self.fhir is not None
        wait_until(lambda: len(self.fhir.requests) >= count, f"{count} POSTs")  # type: ignore[union-attr]
        return [(bundle_of(r.body), r.headers, None) for r in self.fhir.requests]


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    kind = request.param
    if kind.startswith("amqp"):
        running = Target(kind, tmp_path, rabbitmq=request.getfixturevalue("rabbitmq"))
    elif kind == "http":
        with FhirServer() as fhir:
            running = Target(kind, tmp_path, fhir=fhir)
            try:
                yield running
            finally:
                running.server.stop()
            return
    else:
        running = Target(kind, tmp_path)
    try:
        yield running
    finally:
        running.server.stop()


def test_the_withdrawal_arrives_at_each_target(target: Target) -> None:
    server = target.server
    first = original()
    post(server, first)
    server.wait_for_status(message_id(first), Status.DELIVERED)
    post(server, nullification(ITK_EXAMPLE))
    server.wait_for_status(message_id(first), Status.NULLIFIED)

    delivered, withdrawal = (bundle_of(text) for text in bundle_versions(server, first))
    if target.kind == "folder":
        [path] = server.outbox_files()  # the same file, replaced by the withdrawal (a new version)
        assert path.name == f"{message_id(first)}.json" and bundle_of(path.read_bytes()) == withdrawal
    else:
        [(sent, properties, broker_id), (received, withdrawn_with, withdrawal_id)] = target.received(2)
        assert sent == delivered and received == withdrawal
        lower = {key.lower(): value for key, value in withdrawn_with.items()}
        if target.kind == "http":
            assert (lower["x-message-id"], lower["x-interaction"], lower["x-bundle-version"]) == (
                message_id(first),
                NULLIFY_IUC,
                "2",
            )
        else:
            assert (lower["messageid"], lower["interaction"], lower["bundleversion"]) == (
                message_id(first),
                NULLIFY_IUC,
                "2",
            )
            assert (broker_id, withdrawal_id) == (message_id(first), f"{message_id(first)}/v2")
            assert properties["interaction"] != NULLIFY_IUC
    assert_withdraws(withdrawal, delivered)
    assert validate_bundle(withdrawal) == []
    assert metric(server, 'nhs111_outbox_messages{state="nullified"}') == 1
    assert metric(server, 'nhs111_messages_nullified_total{withdrawal="queued"}') == 1


def test_a_message_not_yet_delivered_is_never_delivered(tmp_path: Path) -> None:
    server = start_server(tmp_path, PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS="0.2", **ADDRESSED)
    try:
        server.outbox.parent.mkdir(parents=True, exist_ok=True)
        server.outbox.write_text("not a folder")  # the target is down: the message waits for its retry
        first = original()
        post(server, first)
        server.wait_for_status(message_id(first), Status.RETRYING)
        post(server, nullification(ITK_EXAMPLE))
        server.wait_for_status(message_id(first), Status.NULLIFIED)

        server.outbox.unlink()  # the target is back
        later = build_request()
        post(server, later)
        server.wait_for_status(message_id(later), Status.DELIVERED)
        assert [path.name for path in server.outbox_files()] == [f"{message_id(later)}.json"]
        [stored] = server.stored(message_id(first))
        assert stored.nullified is not None and stored.nullified.withdrawal_version is None
    finally:
        server.stop()


def test_an_unknown_message_is_reported_and_never_delivered_when_it_arrives_later(tmp_path: Path) -> None:
    server = start_server(tmp_path, **ADDRESSED)
    try:
        early = nullification(ITK_EXAMPLE)
        post(server, early)
        server.wait_for_status(message_id(early), Status.UNMATCHED)
        assert metric(server, 'nhs111_outbox_messages{state="unmatched"}') == 1
        assert metric(server, 'nhs111_nullifications_total{effect="unmatched"}') == 1
        [warning] = [json.loads(line) for line in server.log_text().splitlines() if "nullification unmatched" in line]
        assert warning["level"] == "WARNING" and warning["message_id"] == message_id(early)
        assert warning["withdraws_document_id"] == WITHDRAWN_ID

        late = original()
        post(server, late)
        server.wait_for_status(message_id(late), Status.NULLIFIED)
        server.wait_for_status(message_id(early), Status.NULLIFICATION)
        after = build_request()
        post(server, after)
        server.wait_for_status(message_id(after), Status.DELIVERED)
        assert [path.name for path in server.outbox_files()] == [f"{message_id(after)}.json"]
        assert metric(server, 'nhs111_outbox_messages{state="unmatched"}') == 0
        log = server.log_text()
        assert EXAMPLE_NHS_NUMBER not in log and "Fulham" not in log and "wrong patient" not in log
    finally:
        server.stop()
