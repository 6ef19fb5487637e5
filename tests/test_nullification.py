"""Nullification (``../shared/docs/nullification.md``): a 111 sender withdraws a document sent in error.

In process, through the ITK endpoint (``/report``) with the store and an outbox that delivers when told to: each
published example, wrapped as a 111 sender sends it, is accepted; an original delivered (or being sent) gets its
withdrawal, one not yet delivered is never delivered; every stored copy is found; an unknown original is kept as
unmatched and found when it arrives; repeats change nothing. The withdrawal of every corpus and sample Bundle
validates as FHIR STU3. The targets and the server process are in ``test_nullification_targets.py``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REQUEST_SUFFIX, corpus_pairs, require_shared
from itk_factory import RECIPIENT_DOS, RECIPIENT_ODS, build_request, find, to_bytes
from lxml import etree
from nullifying import (
    AUTHOR,
    BARE_EXAMPLES,
    EXAMPLE_NHS_NUMBER,
    EXAMPLES,
    NULLIFY_111,
    NULLIFY_IUC,
    PROFILE_V5,
    PROFILE_V6,
    REASON,
    WITHDRAWN_ID,
    WITHDRAWN_SET_ID,
    assert_withdraws,
    bundle_of,
    example_document,
    message_id,
    nullification,
    original,
)
from test_console import TOKEN, Console, open_console
from waiting import wait_until
from werkzeug.test import Client

from adaptor.cli.messages import messages as messages_command
from adaptor.config import Settings
from adaptor.delivery.conversion import ConversionError, convert, validate_bundle
from adaptor.delivery.forwarders import Delivery
from adaptor.delivery.forwarders.folder import FolderForwarder
from adaptor.delivery.outbox import Deliverer, Outcome
from adaptor.delivery.replay import reconvert, redeliver
from adaptor.delivery.withdrawal import REASON_EXTENSION, withdrawal_bundle
from adaptor.itk import rules
from adaptor.itk.allowlist import AllowList
from adaptor.itk.documents import DocumentKeys, read_nullification
from adaptor.itk.faults import ItkFault
from adaptor.samples import SCENARIOS, build_sample
from adaptor.store import Claim, Status, StoredMessage

NOW = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
ALLOWING = Settings(itk_ods_code_list=(RECIPIENT_ODS,), itk_dos_id_list=(RECIPIENT_DOS,))


@pytest.fixture
def receiver(tmp_path: Path, database_url: str) -> Iterator[Console]:
    """The adaptor with the console on, its store on SQLite and on PostgreSQL (``tests/databases.py``); the outbox
    delivers when the test drains it."""
    running = open_console(tmp_path, delivery_max_attempts=3, database_url=database_url)
    yield running
    running.close()


def post(receiver: Console, root: etree._Element) -> None:
    assert receiver.post_report(root) == 200


def record(receiver: Console, root: etree._Element) -> StoredMessage:
    [found] = receiver.store.find_by_message_id(message_id(root))
    stored = receiver.store.get(found.id)
    assert stored is not None
    return stored


def delivered_and_withdrawn(receiver: Console) -> tuple[etree._Element, etree._Element]:
    """An original delivered, then its nullification (the first example), its withdrawal delivered."""
    first, withdrawing = original(), nullification()
    post(receiver, first)
    receiver.worker.drain()
    post(receiver, withdrawing)
    assert [outcome.status for outcome in receiver.worker.drain()] == [Status.NULLIFIED]
    return first, withdrawing


def delivered_file(receiver: Console, root: etree._Element) -> dict:  # type: ignore[type-arg]
    return bundle_of((receiver.outbox / f"{message_id(root)}.json").read_text(encoding="utf-8"))


# -- reading and validating --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_reads_as_the_document_it_withdraws(name: str) -> None:
    read = read_nullification(example_document(name))
    assert read.withdraws == DocumentKeys(WITHDRAWN_ID, WITHDRAWN_SET_ID, 1)
    assert read.document.set_id == WITHDRAWN_SET_ID and read.document.version == 2
    assert (read.reason_code, read.reason_display, read.reason_text) == (*REASON, REASON[1])
    assert read.author == AUTHOR
    assert read.effective_at == datetime(2007, 1, 2, 12, 34, 59, tzinfo=UTC)  # London time in January: UTC


@pytest.mark.parametrize("name", EXAMPLES)
@pytest.mark.parametrize(("interaction", "profile"), [(NULLIFY_IUC, PROFILE_V5), (NULLIFY_111, PROFILE_V6)])
def test_each_example_wrapped_as_a_111_sender_sends_it_passes_every_rule(
    name: str, interaction: str, profile: str
) -> None:
    raw = to_bytes(nullification(name, interaction=interaction, profile_id=profile))
    for settings in (ALLOWING, ALLOWING.replace(schema_dir=str(require_shared("schemas")))):  # with D4 too
        message = rules.validate_request(rules.parse_request(raw, settings), settings, AllowList(settings))
        assert message.is_nullification and message.interaction == interaction
        assert [w for w in message.warnings if not w.startswith("D5:")] == []


@pytest.mark.parametrize(
    "interaction",
    ["urn:nhs-itk:interaction:nullifyDischargeReport-v1-0", "urn:nhs-itk:interaction:nullifyNHS111CDADocument-v2-0"],
)
def test_another_domains_nullification_is_still_unsupported(interaction: str) -> None:
    raw = to_bytes(nullification(interaction=interaction))
    with pytest.raises(ItkFault) as refused:
        rules.validate_request(rules.parse_request(raw, ALLOWING), ALLOWING, AllowList(ALLOWING))
    assert refused.value.rule == "C16"


def test_a_nullification_that_names_no_document_is_answered_e3_and_kept(receiver: Console) -> None:
    root = nullification()
    related = find(
        root, "soap:Body/itk:DistributionEnvelope/itk:payloads/itk:payload/hl7:ClinicalDocument/hl7:relatedDocument"
    )
    related.getparent().remove(related)  # type: ignore[union-attr]
    response = Client(receiver.app).post("/report", data=to_bytes(root), content_type="text/xml")
    assert response.status_code == 500
    assert b"2200" in response.data and b"relatedDocument/parentDocument" in response.data
    stored = record(receiver, root)
    assert stored.status is Status.REJECTED and "nullification cannot be processed" in (stored.status_reason or "")


# -- what a nullification does to the message it withdraws ----------------------------------------------------


@pytest.mark.parametrize("name", EXAMPLES)
def test_a_delivered_original_gets_its_withdrawal(receiver: Console, name: str) -> None:
    first = original()
    post(receiver, first)
    receiver.worker.drain()
    delivered = delivered_file(receiver, first)

    withdrawing = nullification(name)
    post(receiver, withdrawing)
    stored = record(receiver, first)
    assert stored.status is Status.PENDING and stored.nullified is not None  # the withdrawal, queued
    assert stored.nullified.withdrawal_version == 2 and stored.bundle_version == 2
    [outcome] = receiver.worker.drain()
    assert outcome.status is Status.NULLIFIED

    withdrawal = delivered_file(receiver, first)  # the same file, replaced (version 2)
    assert_withdraws(withdrawal, delivered)
    assert validate_bundle(withdrawal) == []
    header = next(e["resource"] for e in withdrawal["entry"] if e["resource"]["resourceType"] == "MessageHeader")
    assert header["timestamp"] == "2007-01-02T12:34:59.000+00:00"
    assert header["extension"] == [
        {
            "url": REASON_EXTENSION,
            "valueCodeableConcept": {
                "coding": [
                    {"system": "urn:oid:2.16.840.1.113883.2.1.3.2.4.17.176", "code": "02", "display": REASON[1]}
                ],
                "text": REASON[1],
            },
        }
    ]

    stored = record(receiver, first)
    assert stored.status is Status.NULLIFIED and stored.delivered_at is not None
    by = stored.nullified.nullification  # type: ignore[union-attr]
    assert (by.reason_code, by.reason, by.author) == (REASON[0], REASON[1], AUTHOR)
    assert by.message_id == message_id(withdrawing)
    assert [v.version for v in receiver.store.bundle_versions(stored.id)] == [1, 2]
    assert [a.bundle_version for a in receiver.store.delivery_history(stored.id)] == [1, 2]
    assert record(receiver, withdrawing).status is Status.NULLIFICATION
    assert receiver.worker.drain() == []  # nothing more


def test_an_original_not_yet_delivered_is_never_delivered(receiver: Console) -> None:
    first = original()
    post(receiver, first)
    post(receiver, nullification())
    stored = record(receiver, first)
    assert stored.status is Status.NULLIFIED and stored.nullified is not None
    assert stored.nullified.withdrawal_version is None and stored.bundle_version == 1
    assert receiver.worker.drain() == []
    assert not receiver.outbox.exists() or list(receiver.outbox.iterdir()) == []
    [skipped] = redeliver(receiver.store, [stored.id])
    assert not skipped.requeued and "never delivered" in (skipped.skipped or "")


def test_a_message_claimed_but_not_yet_sent_is_not_sent(receiver: Console) -> None:
    first = original()
    post(receiver, first)
    claim = receiver.store.claim_due("worker", 60)
    assert claim is not None
    post(receiver, nullification())
    assert record(receiver, first).status is Status.NULLIFIED
    assert receiver.store.start_attempt(claim, "dir:x", 60, None) is None  # the claim is gone: nothing is sent


class HeldForwarder:
    """Delivers to a folder, each send held until the test releases it: a send in progress."""

    def __init__(self, folder: Path) -> None:
        self.folder = FolderForwarder(folder)
        self.target = self.folder.target
        self.sending, self.release = threading.Event(), threading.Event()

    def send(self, delivery: Delivery) -> None:
        self.sending.set()
        assert self.release.wait(30)
        self.folder.send(delivery)

    def close(self) -> None:
        self.folder.close()


def test_a_send_in_progress_finishes_and_its_withdrawal_follows_it(tmp_path: Path) -> None:
    """The worker sending the original goes on; the withdrawal is due when that send's lease ends, so that it is
    delivered after the original rather than overtaking it."""
    receiver = open_console(tmp_path, delivery_lease_seconds=2)
    try:
        first = original()
        post(receiver, first)
        claim = receiver.store.claim_due("slow-worker", 2)
        assert claim is not None
        held = HeldForwarder(receiver.outbox)
        outcomes: list[Outcome] = []
        sending = threading.Thread(
            target=lambda: outcomes.append(Deliverer(receiver.settings, receiver.store, held).deliver(claim))
        )
        sending.start()
        assert held.sending.wait(30)  # the original is being sent...
        lease_end = record(receiver, first).lease_expires_at
        post(receiver, nullification())
        stored = record(receiver, first)
        assert stored.status is Status.PENDING and stored.nullified is not None
        assert stored.next_attempt_at == lease_end  # ...and its withdrawal is due when that send's lease ends
        held.release.set()
        sending.join(30)
        [outcome] = outcomes
        assert outcome.status is Status.DELIVERED and not outcome.recorded  # sent; the message is the withdrawal's now

        due: list[Claim] = []
        wait_until(
            lambda: (c := receiver.store.claim_due("worker", 60)) is not None and not due.append(c), "withdrawal"
        )
        assert due[0].withdrawal and due[0].interaction == NULLIFY_IUC and due[0].bundle_version == 2
        assert receiver.worker.deliverer.deliver(due[0]).status is Status.NULLIFIED
        first_bundle = bundle_of(receiver.store.bundle_versions(stored.id)[0].bundle)
        assert_withdraws(delivered_file(receiver, first), first_bundle)
    finally:
        receiver.close()


def test_every_stored_copy_is_withdrawn(receiver: Console) -> None:
    """Two copies of the document (primary and copy recipient), one delivered, one not: both withdrawn, each
    as far as it went; a document named only by setId and version is found by those."""
    delivered, waiting = original(), original(interaction="urn:nhs-itk:interaction:copyRecipientNHS111CDADocument-v2-0")
    post(receiver, delivered)
    receiver.worker.drain()
    post(receiver, waiting)
    other_id = "0A1B2C3D-0000-4000-8000-00000000A001"
    by_set = original(document_id=other_id, set_id="0A1B2C3D-0000-4000-8000-00000000A002", version=3)
    post(receiver, by_set)

    post(receiver, nullification())
    post(
        receiver,
        nullification(withdraws=("0A1B2C3D-0000-4000-8000-00000000FFFF", "0a1b2c3d-0000-4000-8000-00000000a002", 3)),
    )
    assert record(receiver, waiting).status is Status.NULLIFIED
    assert record(receiver, by_set).status is Status.NULLIFIED  # setId compared case-insensitively
    assert record(receiver, delivered).nullified is not None
    [outcome] = receiver.worker.drain()
    assert outcome.status is Status.NULLIFIED
    assert {f.name for f in receiver.outbox.iterdir()} == {f"{message_id(delivered)}.json"}


def test_an_unknown_original_is_kept_reported_and_found_when_it_arrives(
    receiver: Console, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    early = nullification()
    post(receiver, early)
    kept = record(receiver, early)
    assert kept.status is Status.UNMATCHED
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING and "unmatched" in r.getMessage()]
    assert warning.withdraws_document_id == WITHDRAWN_ID and warning.message_id == message_id(early)  # type: ignore[attr-defined]
    assert EXAMPLE_NHS_NUMBER not in caplog.text and "Fulham" not in caplog.text
    metrics = receiver.client.get("/metrics").text
    assert 'nhs111_outbox_messages{state="unmatched"} 1.0' in metrics
    assert 'nhs111_nullifications_total{effect="unmatched"} 1.0' in metrics

    late = original()
    post(receiver, late)  # answered OK, stored withdrawn, never delivered
    stored = record(receiver, late)
    assert stored.status is Status.NULLIFIED and stored.nullified is not None
    assert stored.nullified.nullification.record_id == kept.id and stored.nullified.withdrawal_version is None
    assert record(receiver, early).status is Status.NULLIFICATION
    assert receiver.worker.drain() == []
    metrics = receiver.client.get("/metrics").text
    assert 'nhs111_outbox_messages{state="unmatched"} 0.0' in metrics
    assert 'nhs111_messages_nullified_total{withdrawal="none"} 1.0' in metrics


def test_a_message_arriving_later_is_matched_as_the_nullification_would_have_matched_it(receiver: Console) -> None:
    """By id; by setId and version only when no stored message has the id the nullification names (§2.2)."""
    post(receiver, nullification())  # withdraws WITHDRAWN_ID (setId WITHDRAWN_SET_ID, version 1): unmatched
    same_set = original(document_id="0A1B2C3D-0000-4000-8000-00000000D001")
    post(receiver, same_set)
    assert record(receiver, same_set).status is Status.NULLIFIED  # found by setId and version
    post(receiver, original())  # the document itself: found by id
    another = original(document_id="0A1B2C3D-0000-4000-8000-00000000D002")
    post(receiver, another)  # now a message has the id the nullification names: setId and version no longer count
    assert record(receiver, another).status is Status.PENDING and record(receiver, another).nullified is None


def test_an_original_arriving_after_its_nullification_in_sync_mode_is_answered_ok_and_never_delivered(
    tmp_path: Path,
) -> None:
    receiver = open_console(tmp_path, delivery_mode="sync")
    try:
        post(receiver, nullification())
        late = original()
        post(receiver, late)
        assert record(receiver, late).status is Status.NULLIFIED
        post(receiver, late)  # a resend too
        assert not receiver.outbox.exists()
        delivered = original(document_id="0A1B2C3D-0000-4000-8000-00000000B001", set_id="0A1B2C3D-B002")
        post(receiver, delivered)  # delivered in the request, and then withdrawn
        post(receiver, nullification(withdraws=("0A1B2C3D-0000-4000-8000-00000000B001", "X", 1)))
        assert [o.status for o in receiver.worker.drain()] == [Status.NULLIFIED]
        post(receiver, delivered)  # its sender's resend: OK, nothing sent
        assert receiver.worker.drain() == []
        assert record(receiver, delivered).status is Status.NULLIFIED
    finally:
        receiver.close()


def test_resent_and_repeated_nullifications_change_nothing(receiver: Console) -> None:
    first, withdrawing = delivered_and_withdrawn(receiver)
    post(receiver, withdrawing)  # an identical resend
    again = nullification(BARE_EXAMPLES[1])  # another nullification of the same document
    post(receiver, again)
    assert record(receiver, again).status is Status.NULLIFICATION
    assert receiver.worker.drain() == []
    stored = record(receiver, first)
    assert stored.bundle_version == 2 and stored.nullified.nullification.message_id == message_id(withdrawing)  # type: ignore[union-attr]
    assert len(receiver.store.find_by_message_id(message_id(withdrawing))) == 1
    metrics = receiver.client.get("/metrics").text
    assert 'nhs111_nullifications_total{effect="withdrew"} 1.0' in metrics
    assert 'nhs111_nullifications_total{effect="repeated"} 1.0' in metrics


def test_replays_never_undo_a_withdrawal(receiver: Console) -> None:
    first, withdrawing = delivered_and_withdrawn(receiver)
    stored, nullifying = record(receiver, first), record(receiver, withdrawing)

    [refused] = reconvert(receiver.store, receiver.settings, [stored.id])
    assert not refused.requeued and "withdrawn by its sender" in (refused.skipped or "")
    for result in (
        *redeliver(receiver.store, [nullifying.id]),
        *reconvert(receiver.store, receiver.settings, [nullifying.id]),
    ):
        assert not result.requeued and "nullification" in (result.skipped or "")
    [again] = redeliver(receiver.store, [stored.id])  # the withdrawal, sent again
    assert again.requeued and again.bundle_version == 2
    [outcome] = receiver.worker.drain()
    assert outcome.status is Status.NULLIFIED
    assert receiver.store.get(stored.id).bundle_version == 2  # type: ignore[union-attr]


# -- what operators see ----------------------------------------------------------------------------------------------


def test_the_console_and_the_cli_show_who_withdrew_what_when_and_why(receiver: Console, tmp_path: Path) -> None:
    first = original()
    post(receiver, first)
    receiver.worker.drain()
    withdrawing = nullification()
    post(receiver, withdrawing)
    unmatched = nullification(
        withdraws=("0A1B2C3D-0000-4000-8000-00000000C001", "0A1B2C3D-0000-4000-8000-00000000C002", 1)
    )
    post(receiver, unmatched)
    stored, nullifying = record(receiver, first), record(receiver, withdrawing)
    headers = {"Authorization": f"Bearer {TOKEN}"}

    page = receiver.client.get(f"/console/messages/{stored.id}", headers=headers).text
    assert 'id="nullified"' in page and REASON[1] in page and AUTHOR in page and "2007-01-02 12:34:59 GMT" in page
    assert "withdrawal on its way" in page and 'id="reconvert"' not in page
    receiver.worker.drain()
    page = receiver.client.get(f"/console/messages/{stored.id}", headers=headers).text
    assert "withdrawal on its way" not in page and "Bundle version 2: every resource entered-in-error" in page
    page = receiver.client.get(f"/console/messages/{nullifying.id}", headers=headers).text
    assert WITHDRAWN_ID in page and message_id(first) in page and 'id="replay"' not in page
    assert "Reason for Withdrawal" in page and "A nullification has no Bundle of its own" in page  # its document
    page = receiver.client.get(f"/console/messages/{record(receiver, unmatched).id}", headers=headers).text
    assert 'id="unmatched"' in page
    listing = receiver.client.get("/console/messages?status=nullified", headers=headers).text
    assert message_id(first) in listing and message_id(withdrawing) not in listing
    listing = receiver.client.get("/console/messages?status=unmatched", headers=headers).text
    assert message_id(unmatched) in listing and "Nullification unmatched" in listing
    detail = receiver.client.get(f"/console/api/messages/{stored.id}", headers=headers).json
    assert detail["state"] == "nullified" and detail["nullified"]["reason"] == REASON[1]
    assert detail["nullified"]["author"] == AUTHOR and detail["nullified"]["reason_code"] == "02"
    assert detail["nullified"]["nullification_record_id"] == nullifying.id
    assert detail["nullified"]["withdrawal_bundle_version"] == 2
    found = receiver.client.get("/console/api/messages?status=nullified", headers=headers).json
    assert [m["message_id"] for m in found["messages"]] == [message_id(first)]

    env = {"PEM111_DATABASE_URL": receiver.settings.database_url, "PEM111_DATA_DIR": receiver.settings.data_dir}
    shown = CliRunner().invoke(messages_command, ["show", stored.id], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"by its sender: {REASON[1]} (code 02)" in shown.stdout and f"Withdrawn by:  {AUTHOR}" in shown.stdout
    assert "Withdrawal:    Bundle version 2, delivered" in shown.stdout
    shown = CliRunner().invoke(messages_command, ["show", nullifying.id], env=env)
    assert f"Withdraws: {WITHDRAWN_ID}" in shown.stdout and message_id(first) in shown.stdout
    listed = CliRunner().invoke(messages_command, ["list", "--status", "nullified"], env=env)
    assert message_id(first) in listed.stdout and "1 message(s)" in listed.stderr


# -- the withdrawal is valid FHIR STU3 for every Bundle the mapping makes ----------------------------------------


def _withdrawal_of(bundle: dict) -> dict:  # type: ignore[type-arg]
    read = read_nullification(example_document(BARE_EXAMPLES[0]))
    return withdrawal_bundle(
        bundle, read, interaction=NULLIFY_IUC, header_id="2f9f0c52-4d8e-4d63-8f0e-3a6d7c1b2a10", now=NOW
    )


@pytest.mark.parametrize("pair", corpus_pairs())
def test_the_withdrawal_of_each_corpus_bundle_validates_as_stu3(pair: str) -> None:
    request = require_shared("corpus", "reference") / f"{pair}{REQUEST_SUFFIX}"
    bundle = convert(request.read_bytes(), now=NOW, id_seed=pair)
    withdrawal = _withdrawal_of(bundle)
    assert validate_bundle(withdrawal) == []
    assert_withdraws(withdrawal, bundle)


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_the_withdrawal_of_each_sample_bundle_validates_as_stu3(name: str) -> None:
    scenario = next(s for s in SCENARIOS if s.name == name)
    bundle = convert(build_sample(scenario, now=NOW), now=NOW, id_seed=name)
    withdrawal = _withdrawal_of(bundle)
    assert validate_bundle(withdrawal) == []
    assert_withdraws(withdrawal, bundle)


def test_a_nullification_is_read_but_not_converted() -> None:
    with pytest.raises(ConversionError, match="is a nullification: it has no Bundle of its own"):
        convert(to_bytes(nullification()))


def test_making_a_withdrawal_leaves_the_original_bundle_as_it_was() -> None:
    bundle = convert(to_bytes(build_request()), now=NOW, id_seed="x")
    before = repr(bundle)
    _withdrawal_of(bundle)
    assert repr(bundle) == before
