"""One stored Bundle per referral (issue 13): the first delivery, a redelivery after a process died between sending
and recording, and an operator's *redeliver* replay all carry the identical message at every kind of target (the
folder, AMQP 1.0, AMQP 0-9-1, FHIR over HTTP): the same body bytes, resource ids, file name, broker message id,
properties and headers. A *reconvert* replay is a new version of the same referral: same resource ids, marked as
version 2 (broker message id ``<MessageID>/v2``, ``bundleVersion`` property, ``X-Bundle-Version`` header), and
in a folder the same file, replaced.

Real components throughout: the private RabbitMQ node of :mod:`brokers` and the HTTP server of :mod:`fhir_server`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from brokers import PrivateRabbitMQ
from fhir_server import FhirServer
from test_outbox import Harness, fast_settings

from adaptor.delivery.outbox import Deliverer
from adaptor.delivery.replay import reconvert, redeliver
from adaptor.itk.message import ItkMessage
from adaptor.store import Status, utc_now

TARGETS = ["folder", "amqp-1.0", "amqp-0-9-1", "fhir-http"]


@dataclass(frozen=True)
class Copy:
    """One copy of the message as the consumer got it: the body, and everything else that identifies it."""

    body: bytes
    identity: dict[str, Any]


@dataclass
class Target:
    """A harness delivering to one target, and a way to read what the target got since the last read."""

    harness: Harness
    take: Callable[[], list[Copy]]


@contextmanager
def target_for(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Target]:
    if kind == "folder":
        harness = Harness(fast_settings(tmp_path))
        seen: set[Path] = set()

        def take_files() -> list[Copy]:
            # A file counts once per change: its name and bytes are the message.
            copies = []
            for path in harness.files():
                key = (path, path.stat().st_mtime_ns)
                if key not in seen:
                    seen.add(key)  # type: ignore[arg-type]
                    copies.append(Copy(path.read_bytes(), {"file": path.name}))
            return copies

        try:
            yield Target(harness, take_files)
        finally:
            harness.close()
        return
    if kind.startswith("amqp"):
        broker: PrivateRabbitMQ = request.getfixturevalue("rabbitmq")
        protocol = kind.removeprefix("amqp-")
        queue = broker.unique_queue("bundle")
        settings = fast_settings(
            tmp_path,
            forward_target="",
            amqp_broker=broker.url,
            amqp_queue_name=queue,
            amqp_protocol=protocol,
            amqp_username=broker.username,
            amqp_password=broker.password,
        )
        harness = Harness(settings)

        def take_messages() -> list[Copy]:
            consume = broker.consume_amqp10 if protocol == "1.0" else broker.consume_091
            got = consume(queue, 10, timeout=2.0)
            return [
                Copy(
                    m.body,
                    {
                        "message_id": m.message_id,
                        "properties": m.properties,
                        "content_type": m.content_type,
                        "durable": m.durable,
                        "created": m.created,
                        "body_kind": m.body_kind,
                    },
                )
                for m in got
            ]

        try:
            yield Target(harness, take_messages)
        finally:
            harness.close()
        return
    with FhirServer() as endpoint:
        endpoint.reply(201)
        harness = Harness(fast_settings(tmp_path, forward_target=endpoint.url))
        taken = 0

        def take_requests() -> list[Copy]:
            nonlocal taken
            new = endpoint.requests[taken:]
            taken += len(new)
            return [
                Copy(r.body, {"path": r.path, **{k: v for k, v in r.headers.items() if k.startswith("x-")}})
                for r in new
            ]

        try:
            yield Target(harness, take_requests)
        finally:
            harness.close()


def killed_after_sending(harness: Harness, message: ItkMessage) -> None:
    """A worker that sent the Bundle and died before recording it: its delivery, then the store as it would have
    been left (the claim under an expired lease, the attempt never finished)."""
    claim = harness.store.claim_due("killed-worker", 60)
    assert claim is not None
    assert Deliverer(harness.settings, harness.store, harness.forwarder).deliver(claim).status is Status.DELIVERED
    record_id = harness.record(message).id
    with harness.store.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE outbox SET state = 'delivering', lease_owner = 'killed-worker', lease_expires_at = ?, "
            "delivered_at = NULL WHERE record_id = ?",
            (utc_now() - timedelta(seconds=1), record_id),
        )
        conn.exec_driver_sql(
            "UPDATE delivery_attempts SET finished_at = NULL, outcome = NULL WHERE message_record_id = ?", (record_id,)
        )


@pytest.mark.parametrize("kind", TARGETS)
def test_every_delivery_of_a_bundle_is_the_same_message_and_a_reconversion_its_next_version(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with target_for(kind, tmp_path, request) as target:
        harness = target.harness
        message = harness.accept()
        stored = harness.record(message)

        killed_after_sending(harness, message)  # the first copy
        first = target.take()
        [outcome] = harness.worker.drain()  # the redelivery after the crash
        assert outcome.status is Status.DELIVERED
        assert [r.message_id for r in harness.store.possible_redeliveries()] == [message.message_id]
        redelivered = target.take()
        [result] = redeliver(harness.store, [stored.id])  # an operator's redelivery
        assert result.requeued
        harness.worker.drain()
        replayed = target.take()

        [result] = reconvert(harness.store, harness.settings, [stored.id])  # after a mapping fix, say
        assert result.requeued and result.bundle_version == 2
        harness.worker.drain()
        new_version = target.take()
        reconverted = harness.record(message)

    assert stored.bundle is not None and reconverted.bundle is not None
    [copy] = first
    assert copy.body == stored.bundle.encode("utf-8")  # the Bundle stored at acceptance is what is sent
    if kind == "folder":
        # The same bytes under the same name are not written again: the consumer sees one file, unchanged.
        assert redelivered == replayed == []
        assert [p.name for p in harness.files()] == [copy.identity["file"]]
    else:
        assert redelivered == replayed == [copy]  # byte for byte, and every property with it
    if kind.startswith("amqp"):
        assert copy.identity["message_id"] == message.message_id
        assert copy.identity["properties"]["bundleVersion"] == "1"
        assert copy.identity["created"] == pytest.approx(stored.converted_at.timestamp(), abs=1)
    if kind == "fhir-http":
        assert copy.identity["x-message-id"] == message.message_id and copy.identity["x-bundle-version"] == "1"

    # The new version: the same referral (resource ids kept), marked as version 2, replacing the file.
    [version_2] = new_version
    assert version_2.body == reconverted.bundle.encode("utf-8") != copy.body
    old, new = json.loads(copy.body), json.loads(version_2.body)
    assert [e["fullUrl"] for e in new["entry"]] == [e["fullUrl"] for e in old["entry"]]
    if kind == "folder":
        assert version_2.identity == copy.identity and [p.name for p in harness.files()] == [copy.identity["file"]]
    elif kind.startswith("amqp"):
        assert version_2.identity["message_id"] == f"{message.message_id}/v2"
        assert version_2.identity["properties"] == {**copy.identity["properties"], "bundleVersion": "2"}
    else:
        assert version_2.identity == {**copy.identity, "x-bundle-version": "2"}
