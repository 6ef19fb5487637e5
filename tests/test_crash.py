"""Crash test: ``nhs111 serve`` killed with SIGKILL, again and again, while senders stream messages at it.

Every message answered ``OK`` must be delivered after the last restart; each MessageID once, except for a
redelivery after a crash between handing the Bundle over and recording it, which must carry the same MessageID
(so the consumer can drop it) and be accounted for by the store: a MessageID may arrive at most as many times
as the store recorded attempts for it that handed the Bundle over (*delivered*) or may have (*interrupted*),
the accounting of ``benchmarks/crash.py``. The numbers (answered OK, delivered, duplicates) are printed
(``pytest -s``) and checked.

The last test drives the case a crash test only meets by chance: a send that outlasts its lease while another
worker takes the message over and sends it again, with a real broker held still in the middle of the first send.

Senders behave like real ones: a message that got no answer (connection refused or reset, a 2100) is sent
again, unchanged, until it is answered OK, so resends of messages stored just before a kill are part of the
stream. Targets: the folder (where an identical redelivery overwrites nothing, so duplicates are visible only in
the store) and a private RabbitMQ node (:mod:`brokers`), where the consumer sees every copy.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from brokers import PrivateRabbitMQ
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, to_bytes
from nullifying import nullification, original
from senders import NS, Stream, answered_ok, settled
from server_fixture import RunningServer, free_port, start_server
from waiting import wait_until

from adaptor.config import Settings
from adaptor.delivery.forwarders import forwarder_from_settings
from adaptor.delivery.outbox import Deliverer
from adaptor.itk import rules as itk
from adaptor.itk.allowlist import AllowList
from adaptor.store import AttemptOutcome, MessageStore, Redelivery, Status

KILLS = 4
SENDERS = 6
#: Messages answered OK between two kills: the kill lands in a busy stream, not an idle server.
OK_BETWEEN_KILLS = 12
#: The shortest lease the settings allow: a killed server's claims are taken over a second after the restart.
SETTINGS = {
    "PEM111_ITK_ODS_CODE_LIST": RECIPIENT_ODS,
    "PEM111_ITK_DOS_ID_LIST": RECIPIENT_DOS,
    "PEM111_DELIVERY_LEASE_SECONDS": "1",
    "PEM111_DELIVERY_BACKOFF_INITIAL_SECONDS": "0.05",
    "PEM111_DELIVERY_BACKOFF_MAX_SECONDS": "0.5",
    "PEM111_DELIVERY_POLL_SECONDS": "0.1",
    "PEM111_DELIVERY_WORKERS": "3",
}
DELIVERY_TIMEOUT_SECONDS = 60.0


def broker_settings(rabbitmq: PrivateRabbitMQ, queue: str, protocol: str) -> dict[str, str]:
    """:data:`SETTINGS`, delivering to ``queue`` of the private broker over ``protocol``."""
    return {
        **SETTINGS,
        "PEM111_FORWARD_TARGET": rabbitmq.url,
        "PEM111_AMQP_QUEUE_NAME": queue,
        "PEM111_AMQP_PROTOCOL": protocol,
        "PEM111_AMQP_USERNAME": rabbitmq.username,
        "PEM111_AMQP_PASSWORD": rabbitmq.password,
    }


def kill_repeatedly(folder: Path, stream: Stream, port: int, **settings: str) -> RunningServer:
    """Start the server, start the stream, SIGKILL and restart the server :data:`KILLS` times; returns the
    server left running."""
    server = start_server(folder, port=port, **settings)
    stream.start(SENDERS)
    rng = random.Random()
    for _ in range(KILLS):
        target = stream.ok_count() + OK_BETWEEN_KILLS
        wait_until(lambda target=target: stream.ok_count() >= target, "answers between kills", 60)
        time.sleep(rng.uniform(0, 0.2))  # somewhere in the middle of the stream, not right after an answer
        server.process.kill()  # SIGKILL: no shutdown handler runs
        server.process.wait(10)
        server = start_server(folder, port=port, **settings)
    target = stream.ok_count() + OK_BETWEEN_KILLS
    wait_until(lambda: stream.ok_count() >= target, "answers after the last restart", 60)
    stream.stop()
    return server


def delivered_state(server: RunningServer, message_ids: set[str]) -> tuple[set[str], list[Redelivery]]:
    """The MessageIDs delivered (according to the store), and the store's possible redeliveries."""
    store = MessageStore(server.database_url)
    try:
        delivered = {
            message_id
            for message_id in message_ids
            if any(m.status.value == "delivered" for m in store.find_by_message_id(message_id))
        }
        return delivered, store.possible_redeliveries()
    finally:
        store.close()


def possibly_sent(store: MessageStore, message_id: str) -> int:
    """Attempts the store recorded for ``message_id`` that handed the Bundle over or may have (as
    ``benchmarks.crash.possibly_sent``): each explains one copy at the target; a *failed* one explains none."""
    return sum(
        attempt.outcome in (AttemptOutcome.DELIVERED, AttemptOutcome.INTERRUPTED)
        for record in store.find_by_message_id(message_id)
        for attempt in store.delivery_history(record.id)
    )


def unexplained_copies(database_url: str, copies: Counter[str]) -> dict[str, int]:
    """MessageID -> copies at the target beyond what the store explains; only MessageIDs with any."""
    store = MessageStore(database_url)
    try:
        extra = {m: n - max(1, possibly_sent(store, m)) for m, n in copies.items() if n > 1}
    finally:
        store.close()
    return {m: n for m, n in extra.items() if n > 0}


def report(title: str, stream: Stream, delivered: int, duplicates: int, redeliveries: list[Redelivery]) -> None:
    print(
        f"\n{title}: {KILLS} SIGKILLs; {len(stream.sent)} messages sent, {len(stream.answered_ok)} answered OK "
        f"({stream.resent_ok} only after a resend, {stream.unanswered} sends unanswered); {delivered} delivered; "
        f"{duplicates} duplicate deliveries; {sum(r.interrupted_attempts for r in redeliveries)} interrupted "
        f"attempts on {len(redeliveries)} messages (possible duplicates)"
    )


def test_sigkill_loses_no_message_answered_ok_folder_target(tmp_path: Path) -> None:
    stream = Stream([f"http://127.0.0.1:{(port := free_port())}/report"])
    server = kill_repeatedly(tmp_path, stream, port, **SETTINGS)
    try:
        ok = set(stream.answered_ok)
        wait_until(
            lambda: delivered_state(server, ok)[0] == ok,
            "every message answered OK delivered",
            DELIVERY_TIMEOUT_SECONDS,
        )
        # <MessageID>.json, or <MessageID>-<record>.json for a second file; the MessageIDs are 36-character UUIDs.
        files = Counter(path.name[:36] for path in server.outbox_files() if path.suffix == ".json")
        delivered, redeliveries = delivered_state(server, ok)
    finally:
        server.stop()

    duplicates = sum(count - 1 for count in files.values())
    report("crash test, folder target", stream, len(delivered), duplicates, redeliveries)
    assert len(ok) >= (KILLS + 1) * OK_BETWEEN_KILLS
    assert delivered == ok  # nothing answered OK is lost
    assert ok <= set(files)  # and each is in the folder
    # A redelivery sends the stored Bundle again, byte for byte: the folder never holds a second copy.
    assert duplicates == 0


@pytest.mark.parametrize("protocol", ["1.0", "0-9-1"])
def test_sigkill_loses_no_message_answered_ok_broker_target(
    tmp_path: Path,
    rabbitmq: PrivateRabbitMQ,
    protocol: str,
) -> None:
    queue = rabbitmq.unique_queue("crash")
    settings = broker_settings(rabbitmq, queue, protocol)
    stream = Stream([f"http://127.0.0.1:{(port := free_port())}/report"])
    server = kill_repeatedly(tmp_path, stream, port, **settings)
    try:
        ok = set(stream.answered_ok)
        wait_until(lambda: settled(server.database_url), "every stored message delivered", DELIVERY_TIMEOUT_SECONDS)
        delivered, redeliveries = delivered_state(server, ok)
        depth = rabbitmq.queue_depth(queue)
        if protocol == "1.0":
            received = rabbitmq.consume_amqp10(queue, depth, timeout=30)
        else:
            received = rabbitmq.consume_091(queue, depth, timeout=30)
    finally:
        server.stop()

    copies = Counter(str(message.properties["messageId"]) for message in received)
    duplicates = sum(count - 1 for count in copies.values())
    report(f"crash test, AMQP {protocol} broker", stream, len(set(copies) & ok), duplicates, redeliveries)
    assert len(received) == depth
    assert len(ok) >= (KILLS + 1) * OK_BETWEEN_KILLS
    assert delivered == ok and ok <= set(copies)  # nothing answered OK is lost
    assert set(copies) <= stream.sent  # nothing that was never sent
    # Every extra copy is accounted for by the store (an interrupted attempt, or a second delivered one), and
    # carries the same messageId property, which the consumer deduplicates on.
    assert unexplained_copies(server.database_url, copies) == {}


@pytest.mark.parametrize("protocol", ["1.0", "0-9-1"])
def test_a_send_that_outlasts_its_lease_is_a_copy_the_store_accounts_for(
    tmp_path: Path,
    rabbitmq: PrivateRabbitMQ,
    protocol: str,
) -> None:
    """Worker A sends while the broker is held still, so the send outlasts A's 1 s lease; worker B takes the
    message over and sends it again once the broker moves. The broker accepted both: two copies, and the store
    must record two attempts that handed the Bundle over (or may have), whatever A's attempt ends up as."""
    queue = rabbitmq.unique_queue("lease")
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        amqp_broker=rabbitmq.url,
        amqp_queue_name=queue,
        amqp_protocol=protocol,
        amqp_username=rabbitmq.username,
        amqp_password=rabbitmq.password,
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
        delivery_lease_seconds=1,
    )
    store = MessageStore.from_settings(settings)
    store.open()
    forwarder = forwarder_from_settings(settings)
    deliverer = Deliverer(settings, store, forwarder)
    allow_list = AllowList(settings)
    stored = []
    for _ in range(2):  # the first opens the connection, so that A's send is what the paused broker holds up
        raw = to_bytes(build_request())
        message = itk.validate_request(itk.parse_request(raw, settings), settings, allow_list)
        store.accept(message, raw)
        stored.append(message.message_id)
    try:
        warm_up = store.claim_due("warm-up", 30)
        assert warm_up is not None and deliverer.deliver(warm_up).status is Status.DELIVERED
        claim_a = store.claim_due("worker-a", 1)
        assert claim_a is not None and claim_a.message_id == stored[1]
        outcomes = []
        rabbitmq.pause()
        try:
            worker_a = threading.Thread(target=lambda: outcomes.append(deliverer.deliver(claim_a)))
            worker_a.start()
            # A's attempt is recorded as started, so its send is under way and waits for the paused broker...
            wait_until(
                lambda: any(a.outcome is None for a in store.delivery_history(claim_a.record_id)),
                "A's attempt to start",
                timeout=30,
            )
            claim_b = None

            def taken_over() -> bool:  # ...until its 1 s lease runs out and B can claim the message
                nonlocal claim_b
                claim_b = store.claim_due("worker-b", 30)
                return claim_b is not None

            wait_until(taken_over, "A's lease to run out", timeout=30)
        finally:
            rabbitmq.resume()
        worker_a.join(30)
        assert claim_b is not None and claim_b.record_id == claim_a.record_id
        assert claim_b.interrupted == 1  # the takeover found A's attempt unfinished
        [outcome_a] = outcomes
        assert outcome_a.status is Status.DELIVERED and not outcome_a.recorded  # sent, but no longer A's
        assert deliverer.deliver(claim_b).status is Status.DELIVERED

        depth = rabbitmq.queue_depth(queue)
        received = (rabbitmq.consume_amqp10 if protocol == "1.0" else rabbitmq.consume_091)(queue, depth, timeout=30)
        copies = Counter(str(got.properties["messageId"]) for got in received)
        assert copies == {stored[0]: 1, stored[1]: 2}
        assert possibly_sent(store, stored[1]) == 2
        assert unexplained_copies(store.url, copies) == {}
    finally:
        forwarder.close()
        store.close()


@pytest.mark.parametrize("protocol", ["1.0", "0-9-1"])
def test_a_withdrawal_accepted_before_a_sigkill_is_delivered_once_after_the_restart(
    tmp_path: Path, rabbitmq: PrivateRabbitMQ, protocol: str
) -> None:
    """A nullification answered OK, then SIGKILL before any worker delivered its withdrawal: after the restart the
    withdrawal is delivered, once (the nullification and the withdrawal it queues commit together)."""
    queue = rabbitmq.unique_queue("withdrawal")
    settings = broker_settings(rabbitmq, queue, protocol)
    port = free_port()
    withdrawn = original()
    withdrawn_id = withdrawn.findtext("s:Header/a:MessageID", namespaces=NS) or ""
    server = start_server(tmp_path, port=port, **settings)
    try:
        assert answered_ok(requests.Session(), server.report_url, to_bytes(withdrawn))
        server.wait_for_status(withdrawn_id, Status.DELIVERED)
    finally:
        server.stop()

    server = start_server(tmp_path, port=port, **{**settings, "PEM111_DELIVERY_WORKERS": "0"})  # accepts only
    assert answered_ok(requests.Session(), server.report_url, to_bytes(nullification()))
    [stored] = server.stored(withdrawn_id)
    assert stored.status is Status.PENDING and stored.nullified is not None  # the withdrawal, queued, not sent
    server.process.kill()  # SIGKILL: between accepting the nullification and delivering its withdrawal
    server.process.wait(10)

    server = start_server(tmp_path, port=port, **settings)
    try:
        server.wait_for_status(withdrawn_id, Status.NULLIFIED, timeout=DELIVERY_TIMEOUT_SECONDS)
        depth = rabbitmq.queue_depth(queue)
        received = rabbitmq.consume(queue, protocol, depth, timeout=30)
    finally:
        server.stop()
    assert [m.message_id for m in received] == [withdrawn_id, f"{withdrawn_id}/v2"]  # the withdrawal, once
    assert [str(m.properties["bundleVersion"]) for m in received] == ["1", "2"]
