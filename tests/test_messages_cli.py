"""``nhs111 messages list|show`` and ``nhs111 console hash-password`` (issue 5), against a store filled through
the real accept pipeline and outbox."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from itk_factory import NHS_NUMBER, RECIPIENT_DOS, RECIPIENT_ODS, SENDER_ODS, build_request, find, to_bytes
from server_fixture import nhs111_command
from test_store import make_message
from werkzeug.security import check_password_hash

from adaptor.accept import ReceiverService
from adaptor.cli.commands import main
from adaptor.cli.messages import LIST_COLUMNS, parse_since
from adaptor.config import Settings
from adaptor.delivery.forwarders.folder import FolderForwarder
from adaptor.delivery.outbox import OutboxWorker
from adaptor.itk import rules as itk
from adaptor.itk.allowlist import AllowList
from adaptor.store import MessageStore, Status


@dataclass
class Filled:
    """A store with one delivered, one dead-lettered and one pending message, and the environment naming it."""

    env: dict[str, str]
    store: MessageStore
    delivered: str  # MessageIDs
    dead: str
    pending: str
    pending_tracking: str
    raw: bytes  # the pending message's request


def _accept(settings: Settings, service: ReceiverService, **changes: object) -> tuple[str, str, bytes]:
    root = build_request(**changes)  # type: ignore[arg-type]
    raw = to_bytes(root)
    allow_list = AllowList(settings)
    service.accept(itk.validate_request(itk.parse_request(raw, settings), settings, allow_list), raw)
    return find(root, "wsa:MessageID").text or "", find(root, "itk:header").get("trackingid") or "", raw


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Filled]:
    settings = Settings(
        data_dir=str(tmp_path / "data"),
        itk_ods_code_list=(RECIPIENT_ODS,),
        itk_dos_id_list=(RECIPIENT_DOS,),
        delivery_max_attempts=1,
    )
    store = MessageStore.from_settings(settings)
    store.open()
    outbox = tmp_path / "outbox"
    forwarder = FolderForwarder(outbox)
    worker = OutboxWorker(settings, store, forwarder, threads=0)
    service = ReceiverService(settings, store, forwarder)

    delivered, _, _ = _accept(settings, service)
    worker.drain()
    outbox.rename(tmp_path / "delivered")
    outbox.write_text("not a folder")  # the target fails: the next message is dead-lettered
    dead, _, _ = _accept(settings, service)
    worker.drain()
    pending, pending_tracking, raw = _accept(settings, service)
    env = {"PEM111_DATA_DIR": str(tmp_path / "data"), "PEM111_DATABASE_URL": "", "PEM111_LOG_LEVEL": ""}
    yield Filled(env, store, delivered, dead, pending, pending_tracking, raw)
    store.close()


def run(filled: Filled, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=filled.env, catch_exceptions=False)


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output


# == list ========================================================================================================


def rows_of(result: Result) -> list[list[str]]:
    """The rows of ``messages list`` without its header row (checked)."""
    header, *rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert header == list(LIST_COLUMNS)
    return rows


def test_list_shows_every_message_newest_first(filled: Filled) -> None:
    result = run(filled, "messages", "list")
    assert result.exit_code == 0
    rows = rows_of(result)
    assert [row[3] for row in rows] == [filled.pending, filled.dead, filled.delivered]
    assert {(row[7], row[8], row[9]) for row in rows} == {(NHS_NUMBER, "Synthetic TESTPATIENT", "-")}
    assert [row[1] for row in rows] == ["pending", "dead_letter", "delivered"]
    assert rows[0][4] == filled.pending_tracking
    assert rows[0][5] == "primaryOutofHourRecipientNHS111CDADocument-v2-0"
    assert result.stderr.strip() == "3 message(s)"


def test_list_filters(filled: Filled) -> None:
    def message_ids(*args: str) -> list[str]:
        result = run(filled, "messages", "list", *args)
        assert result.exit_code == 0, result.output
        return [row[3] for row in rows_of(result)]

    assert message_ids("--status", "dead_letter") == [filled.dead]
    assert message_ids("--status", "dead-letter", "--status", "DELIVERED") == [filled.dead, filled.delivered]
    assert message_ids("--tracking-id", filled.pending_tracking) == [filled.pending]
    assert message_ids("--tracking-id", filled.pending_tracking.lower()) == [filled.pending]
    assert message_ids("--since", "1h") == [filled.pending, filled.dead, filled.delivered]
    assert message_ids("--since", "2000-01-01") == [filled.pending, filled.dead, filled.delivered]
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%MZ")
    assert message_ids("--since", tomorrow) == []
    assert message_ids("--limit", "1") == [filled.pending]
    assert run(filled, "messages", "list", "--limit", "1").stderr.strip() == "1 of 3 message(s)"
    everything = [filled.pending, filled.dead, filled.delivered]
    # The console's search: the patient, the disposition, the parties, the record id's beginning.
    assert message_ids("--nhs-number", " ".join((NHS_NUMBER[:3], NHS_NUMBER[3:6], NHS_NUMBER[6:]))) == everything
    assert message_ids("--nhs-number", "9990000000") == []
    assert message_ids("--name", "testpat") == everything
    assert message_ids("--name", "synthetic test") == everything
    assert message_ids("--name", "nobody") == []
    assert message_ids("--disposition", "dx05") == []  # the minimal document has none
    assert message_ids("--sender", SENDER_ODS.lower(), "--recipient", RECIPIENT_DOS) == everything
    assert message_ids("--interaction", "primaryOutofHourRecipientNHS111CDADocument-v2-0") == everything
    assert message_ids("--interaction", "copyRecipientNHS111CDADocument-v2-0") == []
    [dead] = filled.store.find_by_message_id(filled.dead)
    assert message_ids("--record", dead.id[:6]) == [filled.dead]
    assert message_ids("--search", NHS_NUMBER) == everything
    assert message_ids("--until", "2000-01-01") == []
    assert message_ids("--warnings") == []


def test_list_and_show_escape_control_characters(filled: Filled, tmp_path: Path) -> None:
    settings = Settings(data_dir=filled.env["PEM111_DATA_DIR"], itk_ods_code_list=(RECIPIENT_ODS,))
    service = ReceiverService(settings, filled.store, FolderForwarder(tmp_path / "x"))
    crafted = "M-1\r\n2099-01-01T00:00:00Z\tdelivered\t1\tforged\x85\u2028\u202e"  # all that XML can carry
    _accept(settings, service, message_id=crafted)

    listed = run(filled, "messages", "list")
    assert listed.exit_code == 0, listed.output
    rows = rows_of(listed)
    assert len(rows) == 4 and all(len(row) == len(LIST_COLUMNS) for row in rows)
    assert rows[0][3] == "M-1\\r\\n2099-01-01T00:00:00Z\\tdelivered\\t1\\tforged\\x85\\u2028\\u202e"
    assert all(line.replace("\t", " ").isprintable() for line in listed.stdout.split("\n"))

    shown = run(filled, "messages", "show", crafted)
    assert shown.exit_code == 0, shown.output
    assert f"MessageID:     {rows[0][3]}\n" in shown.stdout
    assert all(line.isprintable() for line in shown.stdout.split("\n"))


def test_list_errors_are_one_line(filled: Filled) -> None:
    one_line_error(run(filled, "messages", "list", "--since", "yesterday"), "--since 'yesterday'")
    one_line_error(run(filled, "messages", "list", "--since", "2024-13-45"), "--since")
    one_line_error(run(filled, "messages", "list", "--status", "lost"), "--status 'lost': not a state")
    one_line_error(run(filled, "messages", "list", "--until", "later"), "--until 'later'")
    one_line_error(run(filled, "messages", "list", "--born", "17/10/1942"), "--born '17/10/1942'")


def test_parse_since() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("7d", now) == now - timedelta(days=7)
    assert parse_since("1w", now) == now - timedelta(weeks=1)
    assert parse_since("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_since("2024-05-01T09:30Z") == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    assert parse_since("2024-05-01T10:30+01:00") == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="give an age"):
        parse_since("soon")


# == show ========================================================================================================


def test_show_a_dead_letter_with_its_attempts_and_errors(filled: Filled) -> None:
    result = run(filled, "messages", "show", filled.dead)
    assert result.exit_code == 0, result.output
    text = result.stdout
    [record] = filled.store.find_by_message_id(filled.dead)
    for fact in ("Record:", record.id, f"MessageID:     {filled.dead}", "State:         dead_letter", "Last error:"):
        assert fact in text, fact
    assert "Delivery attempts (1):" in text and " failed " in text and "    error: " in text
    assert RECIPIENT_ODS in text and RECIPIENT_DOS in text
    # By record id, or its beginning: the same.
    assert run(filled, "messages", "show", record.id).stdout == text
    assert run(filled, "messages", "show", record.id[:8]).stdout == text
    assert f"NHS number:    {NHS_NUMBER}" in text and "Patient:       Synthetic TESTPATIENT" in text
    assert "Operator actions (0):" in text


def test_show_bundle_and_raw(filled: Filled) -> None:
    bundle = run(filled, "messages", "show", filled.delivered, "--bundle")
    assert bundle.exit_code == 0
    parsed = json.loads(bundle.stdout)
    assert parsed["resourceType"] == "Bundle"
    assert parsed["entry"][0]["resource"]["id"] == filled.delivered  # MessageHeader.id is the MessageID

    raw = run(filled, "messages", "show", filled.pending, "--raw")
    assert raw.exit_code == 0 and raw.stdout_bytes == filled.raw

    # The Bundle is stored when the message is accepted, before any delivery attempt.
    pending = run(filled, "messages", "show", filled.pending, "--bundle")
    assert pending.exit_code == 0 and json.loads(pending.stdout)["resourceType"] == "Bundle"

    rejected_id, _ = filled.store.reject(make_message(), b"<raw/>", "conversion failed: /ClinicalDocument: no")
    one_line_error(run(filled, "messages", "show", rejected_id, "--bundle"), "has no Bundle (rejected)")


def test_show_a_reused_message_id_lists_its_messages(filled: Filled, tmp_path: Path) -> None:
    settings = Settings(data_dir=filled.env["PEM111_DATA_DIR"], itk_ods_code_list=(RECIPIENT_ODS,))
    service = ReceiverService(settings, filled.store, FolderForwarder(tmp_path / "x"))
    _accept(settings, service, message_id=filled.pending)  # same MessageID, new content: a second message
    records = filled.store.find_by_message_id(filled.pending)
    assert len(records) == 2

    result = run(filled, "messages", "show", filled.pending)
    assert result.exit_code == 0
    assert result.stdout.startswith(f"MessageID {filled.pending} names 2 stored messages, oldest first.")
    assert all(f"Record:        {r.id}" in result.stdout for r in records)
    one_line_error(run(filled, "messages", "show", filled.pending, "--raw"), "names 2 stored messages")
    raw = run(filled, "messages", "show", records[0].id, "--raw")
    assert raw.exit_code == 0 and raw.stdout_bytes == filled.raw


def test_show_unknown_id(filled: Filled) -> None:
    one_line_error(run(filled, "messages", "show", "NO-SUCH-ID"), "no stored message with MessageID or record id")


def test_errors_from_the_installed_script_have_no_traceback(filled: Filled) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEM111_")} | filled.env
    done = subprocess.run(
        [*nhs111_command(), "messages", "show", "NO-SUCH-ID"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr == "Error: no stored message with MessageID or record id NO-SUCH-ID\n"
    not_a_database = Path(filled.env["PEM111_DATA_DIR"]) / "not-a-database.db"
    not_a_database.write_bytes(b"not SQLite " * 1000)
    bad_store = env | {"PEM111_DATABASE_URL": f"sqlite:///{not_a_database}"}
    done = subprocess.run(
        [*nhs111_command(), "messages", "list"], env=bad_store, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("Error: cannot read the message store")


def test_the_store_is_only_read(filled: Filled) -> None:
    before = [(m.id, m.status, m.updated_at) for m in filled.store.list_messages()]
    run(filled, "messages", "list")
    run(filled, "messages", "show", filled.dead)
    assert [(m.id, m.status, m.updated_at) for m in filled.store.list_messages()] == before
    assert filled.store.find_by_message_id(filled.dead)[0].status is Status.DEAD_LETTER


# == console hash-password =======================================================================================


def test_hash_password_makes_a_hash_the_console_accepts() -> None:
    result = CliRunner().invoke(main, ["console", "hash-password", "--user", "alice"], input="a long secret\n")
    assert result.exit_code == 0, result.output
    entry = result.stdout.strip()
    user, _, password_hash = entry.partition(":")
    assert user == "alice" and check_password_hash(password_hash, "a long secret")
    assert Settings.from_env({"PEM111_CONSOLE_USERS": entry}).console_users == (("alice", password_hash),)

    bare = CliRunner().invoke(main, ["console", "hash-password"], input="a long secret\n").stdout.strip()
    assert bare != password_hash and check_password_hash(bare, "a long secret")  # salted


def test_hash_password_refuses_short_passwords_and_bad_names() -> None:
    one_line_error(CliRunner().invoke(main, ["console", "hash-password"], input="short\n"), "at least 8")
    one_line_error(
        CliRunner().invoke(main, ["console", "hash-password", "--user", "a:b"], input="a long secret\n"), "--user"
    )
