"""Superseded Bundle versions are kept (issue 13): a reconversion replaces a message's Bundle with its next version
and keeps the one it replaces, byte for byte as it was stored and delivered, in the same transaction; the store
lists every version, ``nhs111 messages show`` lists them and prints any one exactly as delivered
(``--bundle-version N``), and the console lists them and shows each one read-only, with the attempts that sent it.

On SQLite and PostgreSQL (the ``database_url`` fixture of ``tests/databases.py``); the step that adds the table to a
version-2 database is tested in ``tests/test_migrations.py``.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from test_console import Console, confirmed, open_console, sign_in
from test_outbox import Harness, fast_settings
from test_store import LEASE, deliver, make_message
from test_store_postgres import _libpq
from waiting import wait_until

from adaptor.cli.commands import main
from adaptor.delivery.replay import reconvert, redeliver
from adaptor.store import MessageStore, ReplayResult, Status, utc_now, versions_not_kept

# == the store ===================================================================================================


def test_each_reconversion_keeps_the_bundle_it_replaces(store: MessageStore) -> None:
    converted = [utc_now()]
    record_id, _ = store.accept(make_message(), b"x", '{"v": 1, "text": "caf\u00e9"}', converted_at=converted[0])
    deliver(store, store.claim_due("worker", LEASE))
    assert [(v.version, v.current) for v in store.bundle_versions(record_id)] == [(1, True)]

    for text in ('{"v": 2}', '{"v": 3}'):
        converted.append(utc_now())
        result = store.replay_reconverted(record_id, text, converted[-1])
        assert result is not None and result.requeued
        deliver(store, store.claim_due("worker", LEASE))

    versions = store.bundle_versions(record_id)
    assert [(v.version, v.bundle, v.converted_at) for v in versions] == [
        (1, '{"v": 1, "text": "caf\u00e9"}', converted[0]),
        (2, '{"v": 2}', converted[1]),
        (3, '{"v": 3}', converted[2]),
    ]
    assert [v.current for v in versions] == [False, False, True]
    # Each replaced when the next version was made (the reconversion's transaction), the current one never.
    assert versions[0].superseded_at is not None and versions[1].superseded_at is not None
    assert converted[1] <= versions[0].superseded_at <= versions[1].superseded_at and versions[2].superseded_at is None
    assert versions[0].size == len('{"v": 1, "text": "café"}'.encode()) == 25  # bytes as delivered, not characters
    assert [a.bundle_version for a in store.delivery_history(record_id)] == [1, 2, 3]
    assert versions_not_kept(versions) == []


def test_redelivery_and_a_refused_reconversion_keep_no_version(store: MessageStore) -> None:
    record_id, _ = store.accept(make_message(), b"x", '{"v": 1}')
    [result] = store.replay([record_id])
    assert result.requeued
    claim = store.claim_due("worker", LEASE)  # being delivered right now: a reconversion is refused
    result = store.replay_reconverted(record_id, '{"v": 2}', utc_now())
    assert result is not None and not result.requeued
    deliver(store, claim)
    assert [(v.version, v.bundle, v.current) for v in store.bundle_versions(record_id)] == [(1, '{"v": 1}', True)]


def test_a_message_without_a_bundle_has_no_versions_until_its_first(store: MessageStore) -> None:
    rejected_id, _ = store.reject(make_message(), b"x", "conversion failed: no")
    assert store.bundle_versions(rejected_id) == []
    assert store.bundle_versions(str(uuid.uuid4())) == []
    result = store.replay_reconverted(rejected_id, '{"v": 1}', utc_now())
    assert result is not None and result.bundle_version == 1
    assert [(v.version, v.current) for v in store.bundle_versions(rejected_id)] == [(1, True)]  # nothing replaced


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_reconversion_that_waited_for_another_keeps_the_version_that_one_made(store: MessageStore) -> None:
    """Another replica reconverts the same message at the same moment: this reconversion read version 1, waits
    for the other's lock on the outbox row, and must then keep (and follow) the version 2 the other made, not
    write a second version 2."""
    record_id, _ = store.accept(make_message(), b"x", '{"v": 1}')
    other = psycopg.connect(_libpq(store), autocommit=False)
    watcher = psycopg.connect(_libpq(store), autocommit=True)
    results: list[object] = []
    try:
        # The other replica's reconversion, as the store makes it, not yet committed.
        other.execute("SELECT record_id FROM outbox WHERE record_id = %s FOR UPDATE", (record_id,))
        other.execute(
            "INSERT INTO bundle_versions (message_record_id, version, bundle, converted_at, superseded_at) "
            "SELECT id, bundle_version, bundle, converted_at, now() FROM messages WHERE id = %s",
            (record_id,),
        )
        other.execute("UPDATE messages SET bundle = '{\"v\": 2}', bundle_version = 2 WHERE id = %s", (record_id,))
        thread = threading.Thread(
            target=lambda: results.append(store.replay_reconverted(record_id, '{"v": 3}', utc_now()))
        )
        thread.start()
        waiting = (
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        wait_until(lambda: watcher.execute(waiting).fetchone() == (1,), "the reconversion to wait for the other")
        other.commit()
        thread.join(timeout=30)
        assert not thread.is_alive()
    finally:
        other.close()
        watcher.close()
    [result] = results
    assert isinstance(result, ReplayResult) and result.requeued and result.bundle_version == 3
    versions = store.bundle_versions(record_id)
    assert [(v.version, v.bundle) for v in versions] == [(1, '{"v": 1}'), (2, '{"v": 2}'), (3, '{"v": 3}')]


# == end to end: what the folder got is what is kept =============================================================


@pytest.fixture
def harness(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    running = Harness(fast_settings(tmp_path, database_url=database_url))
    yield running
    running.close()


def reconverted_twice(harness: Harness) -> tuple[str, list[bytes]]:
    """A message delivered as version 1, reconverted and delivered as version 2, reconverted again (version 3,
    delivered too); its record id and the bytes the folder held after each delivery."""
    message = harness.accept()
    record_id = harness.record(message).id
    delivered: list[bytes] = []
    for round_ in range(3):
        if round_:
            [result] = reconvert(harness.store, harness.settings, [record_id])
            assert result.requeued and result.bundle_version == round_ + 1
        [outcome] = harness.worker.drain()
        assert outcome.status is Status.DELIVERED
        [file] = harness.files()
        delivered.append(file.read_bytes())
    return record_id, delivered


def test_reconverting_twice_keeps_versions_1_and_2_as_they_were_delivered(harness: Harness) -> None:
    record_id, delivered = reconverted_twice(harness)
    assert len(set(delivered)) == 3  # each version differs (at least Bundle.meta.lastUpdated)

    versions = harness.store.bundle_versions(record_id)
    assert [v.version for v in versions] == [1, 2, 3]
    assert [v.bundle.encode("utf-8") for v in versions] == delivered  # byte for byte
    assert [v.current for v in versions] == [False, False, True]
    stored = harness.store.get(record_id)
    assert stored is not None and (stored.bundle_version, stored.bundle) == (3, versions[2].bundle)
    assert [a.bundle_version for a in harness.store.delivery_history(record_id)] == [1, 2, 3]
    # A redelivery sends the current version and keeps no new one.
    redeliver(harness.store, [record_id])
    harness.worker.drain()
    assert [v.version for v in harness.store.bundle_versions(record_id)] == [1, 2, 3]


# == nhs111 messages show ========================================================================================


def show(harness: Harness, *args: str) -> Result:
    env = {"PEM111_DATA_DIR": harness.settings.data_dir, "PEM111_DATABASE_URL": harness.settings.database_url}
    return CliRunner().invoke(main, ["messages", "show", *args], env=env, catch_exceptions=False)


def one_line_error(result: Result, text: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and text in lines[0], result.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_messages_show_lists_the_versions_and_prints_each_as_delivered(harness: Harness) -> None:
    record_id, delivered = reconverted_twice(harness)

    shown = show(harness, record_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    start = lines.index("Bundle versions (3; --bundle-version N prints one as delivered):")
    listed = lines[start + 1 : start + 4]
    for number, (line, copy) in enumerate(zip(listed, delivered, strict=True), start=1):
        assert line.startswith(f"  v{number} ") and line.endswith(f" {len(copy)} bytes"), line
        assert (" current " in line) == (number == 3) and (" superseded 20" in line) == (number < 3), line
    attempts = [line for line in lines if line.startswith("  20") and " delivered " in line]
    assert [line.split()[2:4] for line in attempts] == [["Bundle", "v1"], ["Bundle", "v2"], ["Bundle", "v3"]]

    for number, copy in enumerate(delivered, start=1):
        printed = show(harness, record_id, "--bundle-version", str(number))
        assert printed.exit_code == 0 and printed.stdout_bytes == copy  # exactly the bytes the folder got
    message_id = json.loads(delivered[0])["entry"][0]["resource"]["id"]
    assert show(harness, message_id, "--bundle-version", "1").stdout_bytes == delivered[0]  # by MessageID too

    one_line_error(show(harness, record_id, "--bundle-version", "4"), "no Bundle version 4 (it has versions 1, 2, 3)")
    one_line_error(show(harness, record_id, "--bundle-version", "0"), "--bundle-version")
    one_line_error(show(harness, record_id, "--bundle-version", "two"), "--bundle-version")
    one_line_error(show(harness, record_id, "--bundle-version", "1", "--raw"), "--raw and --bundle-version")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_messages_show_names_versions_that_were_not_kept(harness: Harness) -> None:
    """A message reconverted before superseded versions were kept (schema version 2) has only its current one."""
    message = harness.accept()
    record_id = harness.record(message).id
    with harness.store.engine.begin() as conn:  # as an adaptor at schema version 2 left it after a reconversion
        conn.exec_driver_sql("UPDATE messages SET bundle_version = 3 WHERE id = ?", (record_id,))
    shown = show(harness, record_id)
    assert shown.exit_code == 0, shown.output
    assert "  v1, v2: not kept (replaced before the adaptor kept superseded versions)" in shown.stdout
    one_line_error(show(harness, record_id, "--bundle-version", "1"), "(it has version 3)")
    rejected_id, _ = harness.store.reject(make_message(), b"x", "conversion failed: no")
    one_line_error(show(harness, rejected_id, "--bundle-version", "1"), "(it has no Bundle)")


# == the console =================================================================================================



@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    running = open_console(tmp_path)
    yield running
    running.close()


def test_the_console_lists_the_versions_and_shows_each_with_the_attempts_that_sent_it(console: Console) -> None:
    message_id, _ = console.accept()
    record_id = console.record_id(message_id)
    client = console.client
    csrf = sign_in(client)
    console.worker.drain()
    delivered = [(console.outbox / f"{message_id}.json").read_bytes()]
    for _ in range(2):
        client.post(f"/console/messages/{record_id}/replay", data=confirmed(csrf, "reconvert"))
        console.worker.drain()
        delivered.append((console.outbox / f"{message_id}.json").read_bytes())

    page = client.get(f"/console/messages/{record_id}").text
    table = page[page.index('id="versions"') : page.index("</table>", page.index('id="versions"'))]
    for number in (1, 2, 3):
        assert f'href="/console/messages/{record_id}/bundles/{number}"' in table
    times = re.findall(r"\d\d:\d\d:\d\d (?:GMT|BST)[^<]*</td>", table)  # UK time, UTC beside in summer
    assert "v3 (current)" in table and len(times) == 3 + 2  # converted x3, superseded x2
    history = page[page.index('id="history"') :]
    assert [f"/bundles/{n}" in history for n in (1, 2, 3)] == [True, True, True]  # each attempt links its version

    for number, copy in enumerate(delivered, start=1):
        shown = client.get(f"/console/messages/{record_id}/bundles/{number}")
        assert shown.status_code == 200
        text = shown.text
        assert hashlib.sha256(copy).hexdigest() in text and f"{len(copy)} bytes" in text
        bundle = html.unescape(text[text.index('id="bundle"') :].split(">", 1)[1].split("</pre>", 1)[0])
        assert json.loads(bundle) == json.loads(copy)
        assert ("Superseded by a reconversion" in text) == (number < 3)
        attempts = text[text.index('id="attempts"') : text.index("</table>", text.index('id="attempts"'))]
        assert attempts.count("<td>delivered</td>") == 1  # the one attempt that sent this version
        assert "/replay" not in text  # read-only: no form but signing out

    assert client.get(f"/console/messages/{record_id}/bundles/4").status_code == 404
    assert client.get(f"/console/messages/{record_id}/bundles/one").status_code == 404
    assert client.get("/console/messages/unknown/bundles/1").status_code == 404
    signed_out = console.client.get(f"/console/messages/{record_id}/bundles/1")
    assert signed_out.status_code == 303 and signed_out.headers["Location"] == "/console/login"


def test_the_console_names_versions_that_were_not_kept(console: Console) -> None:
    message_id, _ = console.accept()
    record_id = console.record_id(message_id)
    with console.store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE messages SET bundle_version = 2 WHERE id = ?", (record_id,))
    client = console.client
    sign_in(client)
    page = client.get(f"/console/messages/{record_id}").text
    assert "Not kept: v1 (replaced before the adaptor kept superseded versions)" in page
    assert client.get(f"/console/messages/{record_id}/bundles/1").status_code == 404


def test_the_attempts_of_a_version_that_was_not_kept_say_so(console: Console) -> None:
    message_id, _ = console.accept()
    console.worker.drain()
    record_id = console.record_id(message_id)
    with console.store.engine.begin() as conn:  # reconverted by an adaptor at schema version 2
        conn.exec_driver_sql("UPDATE messages SET bundle_version = 2 WHERE id = ?", (record_id,))
    client = console.client
    sign_in(client)
    history = client.get(f"/console/messages/{record_id}").text.split('id="history"', 1)[1]
    assert "v1 (not kept)" in history and "/bundles/1" not in history
