"""The outbox worker in process, with real components: a SQLite store, the folder target (an outage is a regular
file where the folder should be: the tests run as root, so permissions would not stop a write), a real HTTP
FHIR endpoint for refusals, and synthetic requests (:mod:`itk_factory`).

Also the operator commands around it: ``nhs111 replay`` and ``nhs111 worker``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO
from fhir_server import FhirServer
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from server_fixture import nhs111_command
from waiting import wait_until

from adaptor import composition
from adaptor.config import ConfigError, Settings
from adaptor.delivery.forwarders import Forwarder, forwarder_from_settings
from adaptor.delivery.forwarders.folder import FolderForwarder
from adaptor.delivery.outbox import JITTER, backoff_seconds
from adaptor.delivery.replay import reconvert, redeliver
from adaptor.itk import rules as itk
from adaptor.itk.message import ItkMessage
from adaptor.store import AttemptOutcome, Status, StoredMessage


def fast_settings(tmp_path: Path, **changes: object) -> Settings:
    """Short backoff and polling so that retries happen within a test; the synthetic recipient allowed."""
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        forward_target=f"dir:{tmp_path / 'outbox'}",
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
        delivery_backoff_initial_seconds=0.02,
        delivery_backoff_max_seconds=0.1,
        delivery_poll_seconds=0.05,
        delivery_workers=2,
    )
    return settings.replace(**changes)


class Harness:
    """A store, a forwarder and the receiver service, as ``nhs111 serve`` wires them (without HTTP)."""

    def __init__(self, settings: Settings, forwarder: Forwarder | None = None) -> None:
        self.settings = settings
        self.components = composition.build(settings, forwarder=forwarder)
        self.given_forwarder = forwarder
        self.store = self.components.store
        self.forwarder = self.components.forwarder
        self.allow_list = self.components.allow_list
        self.worker = self.components.worker
        self.service = self.components.receiver

    @property
    def outbox(self) -> Path:
        return Path(self.settings.resolved_forward_target.removeprefix("dir:"))

    def accept(self, raw: bytes | None = None) -> ItkMessage:
        """Validate a synthetic request (or ``raw``) and hand it to the service, as the SOAP layer does."""
        raw = raw if raw is not None else to_bytes(build_request())
        message = itk.validate_request(itk.parse_request(raw, self.settings), self.settings, self.allow_list)
        self.service.accept(message, raw)
        return message

    def record(self, message: ItkMessage) -> StoredMessage:
        [stored] = self.store.find_by_message_id(message.message_id)
        return stored

    def files(self) -> list[Path]:
        return sorted(self.outbox.glob("*.json")) if self.outbox.is_dir() else []

    def files_for(self, message: ItkMessage) -> list[Path]:
        return [p for p in self.files() if message.message_id.encode() in p.read_bytes()]

    def close(self) -> None:
        self.components.close()
        if self.given_forwarder is not None:
            self.given_forwarder.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    running = Harness(fast_settings(tmp_path))
    yield running
    running.close()


def block(folder: Path) -> None:
    """A target outage: a regular file where the delivery folder should be, so mkdir and writes fail."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    folder.write_text("not a folder")


def unblock(folder: Path) -> None:
    folder.unlink()


# == backoff =====================================================================================================


def test_backoff_doubles_up_to_the_maximum_and_jitter_only_shortens() -> None:
    settings = Settings(delivery_backoff_initial_seconds=1.0, delivery_backoff_max_seconds=300.0)
    for attempt, nominal in [(1, 1.0), (2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0), (29, 300.0), (10_000, 300.0)]:
        waits = [backoff_seconds(attempt, settings) for _ in range(200)]
        assert all(nominal * (1 - JITTER) <= wait <= nominal for wait in waits), attempt
        assert len(set(waits)) > 1  # jittered


def test_the_default_attempts_outlast_a_one_hour_outage() -> None:
    """The issue's promise: a target down for an hour loses nothing. With the defaults, even the shortest
    jittered schedule of PEM111_DELIVERY_MAX_ATTEMPTS attempts spans more than an hour."""
    settings = Settings()
    shortest = sum(
        min(settings.delivery_backoff_max_seconds, settings.delivery_backoff_initial_seconds * 2 ** (n - 1))
        * (1 - JITTER)
        for n in range(1, settings.delivery_max_attempts)
    )
    assert shortest > 3600


# == delivery ====================================================================================================


def test_a_stored_message_is_converted_and_delivered_once(harness: Harness) -> None:
    message = harness.accept()
    assert harness.record(message).status is Status.PENDING  # async: stored, not yet delivered

    [outcome] = harness.worker.drain()

    assert outcome.status is Status.DELIVERED
    stored = harness.record(message)
    assert stored.status is Status.DELIVERED and stored.attempts == 1 and stored.delivered_at is not None
    [delivered] = harness.files_for(message)
    assert delivered.read_text(encoding="utf-8") == stored.bundle  # exactly the stored Bundle
    assert json.loads(stored.bundle)["resourceType"] == "Bundle"
    [attempt] = harness.store.delivery_history(stored.id)
    assert attempt.outcome is AttemptOutcome.DELIVERED and attempt.target == harness.forwarder.target
    assert harness.worker.drain() == []  # nothing left, nothing sent twice


def test_the_wake_up_delivers_at_once_without_waiting_for_the_poll(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path, delivery_poll_seconds=3600.0))
    harness.worker.start()
    try:
        # The threads' first look found nothing; from now on only a wake-up can make them look within the hour.
        wait_until(lambda: harness.store.count_by_status()[Status.PENDING] == 0, "the first poll")
        message = harness.accept()
        wait_until(lambda: harness.record(message).status is Status.DELIVERED, "delivery after the wake-up")
    finally:
        harness.close()
    assert len(harness.files_for(message)) == 1


def test_a_target_outage_is_retried_with_backoff_and_delivered_after_it(harness: Harness) -> None:
    block(harness.outbox)
    messages = [harness.accept() for _ in range(3)]
    harness.worker.start()

    wait_until(lambda: all(harness.record(m).attempts >= 3 for m in messages), "three failed attempts of every message")
    for message in messages:
        stored = harness.record(message)
        assert stored.status in (Status.RETRYING, Status.DELIVERING)
        assert stored.bundle is not None  # converted once
        history = harness.store.delivery_history(stored.id)
        assert all(a.outcome in (AttemptOutcome.FAILED, None) for a in history)
        assert history[0].error and "FileExistsError" in history[0].error

    unblock(harness.outbox)
    wait_until(lambda: all(harness.record(m).status is Status.DELIVERED for m in messages), "delivery")

    for message in messages:
        stored = harness.record(message)
        [delivered] = harness.files_for(message)
        assert delivered.read_text(encoding="utf-8") == stored.bundle  # the retries sent the first conversion
        assert [a.outcome for a in harness.store.delivery_history(stored.id)][-1] is AttemptOutcome.DELIVERED


def test_a_success_after_an_outage_brings_the_waiting_retries_forward(tmp_path: Path) -> None:
    """Backoff an hour long: messages that failed during an outage are delivered as soon as a delivery shows
    the target is back, not an hour later."""
    harness = Harness(
        fast_settings(tmp_path, delivery_backoff_initial_seconds=3600.0, delivery_backoff_max_seconds=3600.0)
    )
    try:
        block(harness.outbox)
        waiting = [harness.accept() for _ in range(2)]
        assert [o.status for o in harness.worker.drain()] == [Status.RETRYING, Status.RETRYING]
        assert harness.worker.drain() == []  # not due for an hour

        unblock(harness.outbox)
        fresh = harness.accept()
        outcomes = harness.worker.drain()

        assert [o.status for o in outcomes] == [Status.DELIVERED] * 3
        assert all(harness.record(m).status is Status.DELIVERED for m in [*waiting, fresh])
    finally:
        harness.close()


def test_out_of_attempts_is_dead_lettered_with_the_last_error(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path, delivery_max_attempts=3))
    try:
        block(harness.outbox)
        message = harness.accept()
        harness.worker.start()
        wait_until(lambda: harness.record(message).status is Status.DEAD_LETTER, "the dead letter")

        stored = harness.record(message)
        assert stored.attempts == 3
        assert stored.status_reason.startswith("gave up after 3 attempts: FileExistsError")
        history = harness.store.delivery_history(stored.id)
        assert [a.outcome for a in history] == [AttemptOutcome.FAILED] * 3
        assert history[0].started_at < history[1].started_at < history[2].started_at
        assert harness.store.claim_due("anyone", 60) is None  # dead letters stay put
    finally:
        harness.close()


def test_a_message_stored_without_a_bundle_is_converted_once_or_dead_lettered(harness: Harness) -> None:
    """Messages stored by an adaptor before schema version 2 have no Bundle: the first attempt converts and
    keeps it (as version 1, every later attempt sends it), or dead-letters the message if it cannot."""
    message, old = harness.accept(), harness.accept()
    # A stored request the converter cannot read: what a mapping defect looks like from here.
    with harness.store.engine.begin() as conn:
        forget = "UPDATE messages SET bundle = NULL, bundle_version = NULL, converted_at = NULL WHERE message_id = ?"
        conn.exec_driver_sql(forget, (message.message_id,))
        conn.exec_driver_sql(forget, (old.message_id,))
        conn.exec_driver_sql("UPDATE messages SET raw = ? WHERE message_id = ?", (b"<unmappable/>", message.message_id))

    outcome, converted = harness.worker.drain()

    kept = harness.record(old)
    assert converted.status is Status.DELIVERED and kept.bundle_version == 1 and kept.converted_at is not None
    assert [f.read_bytes() for f in harness.files()] == [kept.bundle.encode("utf-8")]

    assert outcome.status is Status.DEAD_LETTER
    stored = harness.record(message)
    assert stored.status_reason.startswith("conversion failed: ") and stored.attempts == 1
    [attempt] = harness.store.delivery_history(stored.id)
    assert attempt.outcome is AttemptOutcome.CONVERSION_FAILED and attempt.bundle_version is None


def test_a_permanent_refusal_is_dead_lettered_at_once(tmp_path: Path) -> None:
    with FhirServer() as endpoint:
        endpoint.reply(422, b'{"resourceType": "OperationOutcome"}', {"Content-Type": "application/fhir+json"})
        harness = Harness(fast_settings(tmp_path, forward_target=endpoint.url))
        try:
            message = harness.accept()
            [outcome] = harness.worker.drain()
            stored = harness.record(message)
        finally:
            harness.close()
        assert len(endpoint.requests) == 1

    assert outcome.status is Status.DEAD_LETTER
    assert stored.status is Status.DEAD_LETTER and "422" in stored.status_reason
    [attempt] = harness.store.delivery_history(stored.id)
    assert attempt.outcome is AttemptOutcome.REJECTED


def test_a_transient_http_failure_is_retried(tmp_path: Path) -> None:
    with FhirServer() as endpoint:
        endpoint.reply(503)
        harness = Harness(fast_settings(tmp_path, forward_target=endpoint.url))
        try:
            message = harness.accept()
            assert [o.status for o in harness.worker.drain()] == [Status.RETRYING]
            endpoint.reply(201)
            wait_until(lambda: harness.worker.run_once() is not None, "the retry to be due")
            stored = harness.record(message)
        finally:
            harness.close()
        bodies = [request.body for request in endpoint.requests]

    assert stored.status is Status.DELIVERED
    assert len(bodies) == 2 and bodies[0] == bodies[1] == stored.bundle.encode("utf-8")


def test_an_interrupted_attempt_is_delivered_again_and_counted(harness: Harness) -> None:
    """A worker that died after sending and before recording: once its lease has expired, another worker
    delivers the message again (same bytes, same MessageID) and the possible duplicate is counted."""
    message = harness.accept()
    dead = harness.store.claim_due("dead-worker", 0.0)
    harness.store.start_attempt(dead, harness.forwarder.target, 0.0, None)

    [outcome] = harness.worker.drain()

    assert outcome.status is Status.DELIVERED
    [redelivery] = harness.store.possible_redeliveries()
    assert (redelivery.message_id, redelivery.interrupted_attempts) == (message.message_id, 1)
    [delivered] = harness.files()  # the stored Bundle, sent again as it was
    assert delivered.read_bytes() == dead.bundle.encode("utf-8") == harness.record(message).bundle.encode("utf-8")


def test_many_messages_many_threads_each_delivered_once(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path, delivery_workers=4))
    try:
        harness.worker.start()
        messages: list[ItkMessage] = []
        lock = threading.Lock()

        def send(count: int) -> None:
            for _ in range(count):
                message = harness.accept()
                with lock:
                    messages.append(message)

        senders = [threading.Thread(target=send, args=(15,)) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        wait_until(lambda: harness.store.count_by_status()[Status.DELIVERED] == 60, "60 deliveries")
        assert harness.worker.stop()
    finally:
        harness.close()

    assert len(harness.files()) == 60
    for message in messages:
        stored = harness.record(message)
        assert [a.outcome for a in harness.store.delivery_history(stored.id)] == [AttemptOutcome.DELIVERED]
    owners = {harness.store.delivery_history(harness.record(m).id)[0].owner for m in messages}
    assert len(owners) > 1  # the threads shared the work
    assert not harness.worker.running


def test_stop_lets_the_delivery_in_flight_finish(tmp_path: Path) -> None:
    with FhirServer() as endpoint:
        endpoint.reply(201, delay=1.0)
        harness = Harness(fast_settings(tmp_path, forward_target=endpoint.url, delivery_workers=1))
        try:
            message = harness.accept()
            harness.worker.start()
            wait_until(lambda: len(endpoint.requests) == 1, "the delivery to start")
            assert harness.worker.stop(timeout=10)
            stored = harness.record(message)
        finally:
            harness.close()
    assert stored.status is Status.DELIVERED and stored.lease_owner is None


def test_redeliver_sends_the_same_bytes_and_reconvert_a_new_version_that_replaces_the_file(harness: Harness) -> None:
    message = harness.accept()
    harness.worker.drain()
    first = harness.record(message)
    [delivered] = harness.files()
    sent = delivered.read_bytes()
    assert sent == first.bundle.encode("utf-8")  # the stored Bundle is what was delivered

    [result] = redeliver(harness.store, [first.id])
    assert result.requeued and result.previous is Status.DELIVERED and result.bundle_version == 1
    [outcome] = harness.worker.drain()
    assert outcome.status is Status.DELIVERED
    assert harness.files() == [delivered] and delivered.read_bytes() == sent  # the same file, the same bytes

    [result] = reconvert(harness.store, harness.settings, [first.id])
    assert result.requeued and result.bundle_version == 2
    [outcome] = harness.worker.drain()
    replayed = harness.record(message)
    assert outcome.status is Status.DELIVERED and replayed.replays == 2 and replayed.attempts == 1
    assert replayed.bundle_version == 2 and replayed.converted_at > first.converted_at
    new_version = json.loads(replayed.bundle)
    old_version = json.loads(sent)
    assert new_version["meta"]["lastUpdated"] != old_version["meta"]["lastUpdated"]
    # The same referral: the resource ids are kept, so the folder's file is replaced rather than joined.
    assert [e["fullUrl"] for e in new_version["entry"]] == [e["fullUrl"] for e in old_version["entry"]]
    assert harness.files() == [delivered] and delivered.read_bytes() == replayed.bundle.encode("utf-8")
    history = harness.store.delivery_history(replayed.id)
    assert [a.bundle_version for a in history] == [1, 1, 2]  # the history is kept, with the version each sent


# == nhs111 replay / nhs111 worker ===============================================================================


def cli_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(
        PEM111_DATA_DIR=settings.data_dir,
        PEM111_FORWARD_TARGET=settings.resolved_forward_target,
        PEM111_DELIVERY_POLL_SECONDS="0.05",
        PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS="0.02",
        PEM111_DELIVERY_BACKOFF_MAX_SECONDS="0.1",
    )
    return env


def nhs111(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*nhs111_command(), *args], cwd=REPO, env=cli_env(settings), capture_output=True, text=True, timeout=60
    )


def test_nhs111_replay_by_message_id_and_dead_letters(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path, delivery_max_attempts=1))
    try:
        block(harness.outbox)
        dead = [harness.accept() for _ in range(2)]
        harness.worker.drain()
        unblock(harness.outbox)
        delivered = harness.accept()
        harness.worker.drain()
        assert [harness.record(m).status for m in [*dead, delivered]] == [
            Status.DEAD_LETTER,
            Status.DEAD_LETTER,
            Status.DELIVERED,
        ]

        by_id = nhs111(harness.settings, "replay", delivered.message_id, "uuid:NOT-STORED")
        assert by_id.returncode == 1, by_id.stderr
        assert f"queued  {delivered.message_id}" in by_id.stdout and "was delivered" in by_id.stdout
        assert "no stored message with MessageID uuid:NOT-STORED" in by_id.stderr
        assert harness.record(delivered).status is Status.PENDING

        letters = nhs111(harness.settings, "replay", "--dead-letters")
        assert letters.returncode == 0, letters.stderr
        assert all(f"queued  {m.message_id}" in letters.stdout for m in dead)
        assert "2 message(s) queued for delivery" in letters.stderr

        assert [o.status for o in harness.worker.drain()] == [Status.DELIVERED] * 3
        record = harness.record(delivered)
        assert record.replays == 1
        # Redelivered: the same Bundle, so the same file with the same bytes.
        [file] = harness.files_for(delivered)
        assert file.read_bytes() == record.bundle.encode("utf-8")

        again = nhs111(harness.settings, "replay", "--reconvert", delivered.message_id)
        assert again.returncode == 0, again.stderr
        assert f"queued  {delivered.message_id}" in again.stdout and "Bundle version 2" in again.stdout
        assert [o.status for o in harness.worker.drain()] == [Status.DELIVERED]
        record = harness.record(delivered)
        assert record.bundle_version == 2 and harness.files_for(delivered) == [file]  # replaced in place
        assert file.read_bytes() == record.bundle.encode("utf-8")

        rejected = nhs111(harness.settings, "replay", "--rejected")
        assert rejected.returncode == 2 and "--reconvert" in rejected.stderr
    finally:
        harness.close()


def test_nhs111_replay_needs_something_to_replay(tmp_path: Path) -> None:
    result = nhs111(fast_settings(tmp_path), "replay")
    assert result.returncode == 2 and "MESSAGE_ID" in result.stderr


def test_nhs111_worker_delivers_what_others_stored_and_stops_cleanly(tmp_path: Path) -> None:
    harness = Harness(fast_settings(tmp_path))
    try:
        messages = [harness.accept() for _ in range(3)]  # nobody in this process delivers them
        log_path = tmp_path / "worker.log"
        with open(log_path, "wb") as log_file:
            worker = subprocess.Popen(
                [*nhs111_command(), "worker"],
                cwd=REPO,
                env=cli_env(harness.settings),
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_until(lambda: all(harness.record(m).status is Status.DELIVERED for m in messages), "the worker")
        finally:
            worker.send_signal(signal.SIGTERM)
            returncode = worker.wait(30)
        log = log_path.read_text()
        assert returncode == 0, log
        assert "received SIGTERM" in log and json.loads(log.splitlines()[-1])["event"] == "stopped"
        assert len(harness.files()) == 3
    finally:
        harness.close()


def test_a_folder_forwarder_instance_is_shared_by_the_threads(tmp_path: Path) -> None:
    """The same forwarder object serves every thread (the Forwarder contract): one instance, many sends."""
    forwarder = FolderForwarder(tmp_path / "outbox")
    harness = Harness(fast_settings(tmp_path, delivery_workers=3), forwarder=forwarder)
    try:
        harness.worker.start()
        messages = [harness.accept() for _ in range(12)]
        wait_until(lambda: all(harness.record(m).status is Status.DELIVERED for m in messages), "delivery")
    finally:
        harness.close()
    assert harness.worker.deliverer.forwarder is forwarder and len(harness.files()) == 12


def test_an_unsupported_target_is_refused_without_echoing_it() -> None:
    """The value may carry a password (``ftp://user:secret@host``): the error names the scheme, never the value."""
    with pytest.raises(ConfigError) as refused:
        forwarder_from_settings(Settings(forward_target="ftp://nhs111:s3cret@files.example/out"))
    assert "'ftp'" in str(refused.value) and "s3cret" not in str(refused.value)
