"""The search index (schema step 4) on SQLite and PostgreSQL: what it reads of a Bundle, the searches it answers,
``nhs111 db reindex`` for messages stored before it, and retention (``nhs111 db purge``), which never touches an
undelivered message and takes every dependent row with a purged one (issue 15)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text, update
from test_store import make_message

from adaptor.cli.commands import main
from adaptor.config import Settings
from adaptor.delivery.conversion import convert
from adaptor.store import (
    AttemptOutcome,
    MessageQuery,
    MessageStore,
    Rejection,
    RetentionPolicy,
    RetentionSchedule,
    Status,
    bundle_versions,
    delivery_attempts,
    message_index,
    messages,
    migrations,
    operator_actions,
    outbox,
    rejections,
    utc_now,
)
from adaptor.store.index import bundle_facts, fold_name

SAMPLES = Path(__file__).resolve().parents[1] / "samples"


def patient_bundle(nhs: str, family: str, given: str, born: str, postcode: str, dx: str = "Dx05") -> dict[str, Any]:
    """The parts of an Encounter Report Bundle the index reads."""
    return {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
                "name": [{"use": "official", "family": family, "given": [given]}],
                "birthDate": born,
                "address": [{"use": "home", "postalCode": postcode}],
            }},
            {"resource": {"resourceType": "ProcedureRequest",
                          "code": {"coding": [{"code": dx, "display": "Speak to a primary care service"}]}}},
            {"resource": {"resourceType": "HealthcareService", "name": "Exampleton Health Centre"}},
            {"resource": {"resourceType": "Composition", "date": "2026-11-23T19:15:51+00:00"}},
        ],
    }  # fmt: skip


def stored(store: MessageStore, bundle: dict[str, Any], **message: Any) -> str:
    record_id, _ = store.accept(make_message(**message), b"<raw/>", json.dumps(bundle), facts=bundle_facts(bundle))
    return record_id


def deliver(store: MessageStore, record_id: str, *, days_ago: float = 0) -> None:
    claim = store.claim_due("test", 60)
    assert claim is not None and claim.record_id == record_id
    attempt = store.start_attempt(claim, "dir:x", 60, None)
    store.finish(claim, state=Status.DELIVERED, outcome=AttemptOutcome.DELIVERED, target="dir:x", attempt_id=attempt)
    if days_ago:
        with store.engine.begin() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.record_id == record_id)
                .values(delivered_at=utc_now() - timedelta(days=days_ago))
            )


def ids(store: MessageStore, **query: Any) -> set[str]:
    return {m.id for m in store.list_messages(where=MessageQuery(**query), limit=1000)}


# == what the index reads =========================================================================================


def test_the_facts_of_a_converted_sample() -> None:
    facts = bundle_facts(convert((SAMPLES / "gp-referral.xml").read_bytes()))
    assert facts["nhs_number"] and len(facts["nhs_number"]) == 10 and facts["nhs_number"].isdigit()
    assert facts["family_key"] == facts["family_key"].lower() and facts["patient_name"].endswith(
        facts["family_key"].upper()
    )
    assert facts["birth_date"] and facts["postcode"] and " " not in facts["postcode"]
    assert facts["disposition_code"].startswith("DX") and facts["disposition"]
    assert facts["receiving_service"] and facts["effective_at"].tzinfo is not None
    assert bundle_facts({"entry": [{"resource": "nonsense"}, 3]}) == bundle_facts(None)  # never raises
    assert fold_name("  Zoë  O'Brien ") == "zoe o'brien"


# == searching ===================================================================================================


def test_searches_by_patient_and_parties(store: MessageStore) -> None:
    zoe = stored(store, patient_bundle("9990001235", "Ängström", "Zoë", "1942-10-17", "XS1 5WC"))
    bob = stored(store, patient_bundle("9990009999", "Angus", "Bob", "1990-01-02", "XS2 1AA", dx="Dx02"))
    other = stored(store, patient_bundle("9990004444", "Smith", "Anna", "1942-10-17", "XT9 9ZZ"))
    assert ids(store, nhs_number="999 000 1235") == {zoe}
    assert ids(store, search="999 000 1235") == {zoe}
    assert ids(store, name="ang") == {zoe, bob}  # accents ignored, any case
    assert ids(store, name="ANGS") == {zoe}
    assert ids(store, name="zoe ang") == {zoe} and ids(store, name="angus bob") == {bob}
    assert ids(store, name="an") == {zoe, bob}  # one word: the family name ("Anna" is a given name)
    assert ids(store, name="anna smi") == {other} and ids(store, name="smith ann") == {other}
    assert ids(store, birth_date="1942-10-17") == {zoe, other}
    assert ids(store, postcode="xs1") == {zoe} and ids(store, postcode="XS") == {zoe, bob}
    assert ids(store, disposition="dx02") == {bob} and ids(store, disposition="primary care") == {zoe, bob, other}
    assert ids(store, sender="rye") == {zoe, bob, other} and ids(store, sender="XYZ") == set()
    assert ids(store, recipient="em396") == {zoe, bob, other} and ids(store, recipient="26428") == {zoe, bob, other}
    assert ids(store, record_prefix=bob[:5].upper()) == {bob}
    assert ids(store, search=bob[:6]) == {bob}  # a record id's beginning in the search box
    assert ids(store, name="%") == set() and ids(store, name="_") == set()  # LIKE wildcards are literal
    # The state counts follow the search, whatever state the search asks for.
    deliver(store, zoe)
    counts = store.count_by_status_matching(MessageQuery(name="ang", statuses=(Status.PENDING,)))
    assert counts[Status.DELIVERED] == 1 and counts[Status.PENDING] == 1 and sum(counts.values()) == 2
    assert store.count_messages(MessageQuery(name="ang", statuses=(Status.PENDING,))) == 1
    [listed] = store.list_messages(where=MessageQuery(nhs_number="9990001235"))
    assert listed.index is not None and listed.index.patient_name == "Zoë ÄNGSTRÖM"


def test_a_rejected_message_is_found_by_its_identifiers(store: MessageStore) -> None:
    record_id, _ = store.reject(make_message(tracking_id="TRACK-ABC-1"), b"<raw/>", "conversion failed: x")
    assert ids(store, search="track-abc") == {record_id}
    record = store.get(record_id)
    assert record is not None and record.index is not None and record.index.nhs_number is None


# == reindex =====================================================================================================


def test_reindex_fills_what_step_4_copied_and_keeps_warnings(store: MessageStore) -> None:
    first = stored(store, patient_bundle("9990001235", "Testwell", "Margaret", "1942-10-17", "XS1 5WC"))
    second = stored(store, patient_bundle("9990002222", "Other", "Olive", "1950-01-01", "XS3 3CC"))
    with store.engine.begin() as conn:
        # As step 4 left a message stored before it: identifiers only; and one written by an older replica: none.
        conn.execute(text("UPDATE message_index SET indexed = 0, nhs_number = NULL, family_key = NULL, warnings = "
                          "'[\"kept\"]' WHERE record_id = :id"), {"id": first})  # fmt: skip
        conn.execute(text("DELETE FROM message_index WHERE record_id = :id"), {"id": second})
    assert ids(store, name="testw") == set() and store.unindexed_count() == 2
    seen: list[int] = []
    assert store.reindex(progress=seen.append) == 2 and seen == [2]
    assert ids(store, name="testw") == {first} and ids(store, nhs_number="9990002222") == {second}
    assert store.get(first).index.warnings == ("kept",)  # type: ignore[union-attr]
    assert store.unindexed_count() == 0 and store.reindex() == 0
    assert store.reindex(everything=True) == 2


# == retention ===================================================================================================


def _count(store: MessageStore, table: Any, record_id: str) -> int:
    column = table.c.record_id if "record_id" in table.c else table.c.message_record_id
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(column == record_id)).scalar_one())


def test_purge_takes_only_old_delivered_messages_with_their_rows(store: MessageStore) -> None:
    bundle = patient_bundle("9990001235", "Testwell", "Margaret", "1942-10-17", "XS1 5WC")
    old = stored(store, bundle)
    deliver(store, old, days_ago=40)
    store.replay_reconverted(old, json.dumps(bundle), utc_now(), operator="alice")  # a kept version, an action
    deliver(store, old, days_ago=40)
    recent = stored(store, bundle)
    deliver(store, recent, days_ago=5)
    pending = stored(store, bundle)  # undelivered: never purged, however old
    rejected, _ = store.reject(make_message(), b"<raw/>", "conversion failed: x")
    with store.engine.begin() as conn:
        conn.execute(update(messages).values(received_at=utc_now() - timedelta(days=400)))
    store.record_rejection(Rejection("C4", 1000, "old", "E-OLD"))
    store.record_rejection(Rejection("C4", 1000, "new", "E-NEW"))
    with store.engine.begin() as conn:
        conn.execute(update(rejections).where(rejections.c.error_id == "E-OLD").values(
            rejected_at=utc_now() - timedelta(days=100)))  # fmt: skip
    assert all(_count(store, t, old) for t in (delivery_attempts, bundle_versions, message_index, operator_actions))

    policy = RetentionPolicy(utc_now() - timedelta(days=30), utc_now() - timedelta(days=90))
    assert [m.record_id for m in store.purgeable_messages(policy)] == [old]
    assert [r.rule for r in store.purgeable_rejections(policy)] == ["C4"]
    result = store.purge(policy)
    assert (result.messages, result.rejections) == (1, 1)
    assert store.get(old) is None
    assert not any(_count(store, t, old) for t in (delivery_attempts, bundle_versions, message_index, operator_actions))
    for kept in (recent, pending, rejected):
        assert store.get(kept) is not None
    assert [r.error_id for r in store.list_rejections()] == ["E-NEW"]
    assert store.purge(policy).messages == 0


def test_the_schedule_and_what_keeps_everything(store: MessageStore) -> None:
    settings = Settings(retention_delivered_days=30)
    record_id = stored(store, patient_bundle("9990001235", "A", "B", "1942-10-17", "XS1"))
    deliver(store, record_id, days_ago=31)
    assert RetentionPolicy.from_settings(Settings()).keeps_everything
    assert RetentionSchedule(store, Settings()).run_once() is None  # nothing set: nothing purged
    purged = RetentionSchedule(store, settings).run_once()
    assert purged is not None and purged.messages == 1 and store.get(record_id) is None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_db_purge_dry_run_lists_exactly_what_purge_deletes(store: MessageStore, database_url: str) -> None:
    bundle = patient_bundle("9990001235", "Testwell", "Margaret", "1942-10-17", "XS1 5WC")
    old = [stored(store, bundle) for _ in range(3)]
    for record_id in old:
        deliver(store, record_id, days_ago=10)
    young = stored(store, bundle)
    deliver(store, young, days_ago=1)
    held = stored(store, bundle)
    with store.engine.begin() as conn:
        conn.execute(update(outbox).where(outbox.c.record_id == held).values(state=Status.HELD.value))
    env = {"PEM111_DATABASE_URL": database_url, "PEM111_RETENTION_DELIVERED_DAYS": "7"}
    runner = CliRunner()
    dry = runner.invoke(main, ["db", "purge"], env=env, catch_exceptions=False)
    assert dry.exit_code == 0, dry.output
    header, *lines = dry.stdout.splitlines()
    assert header == "kind\trecord id\tMessageID\treceived\tdelivered"
    listed = {line.split("\t")[1] for line in lines}
    assert listed == set(old) and "dry run: would purge 3 delivered message(s)" in dry.stderr
    assert all(store.get(record_id) is not None for record_id in old)  # a dry run deletes nothing
    done = runner.invoke(main, ["db", "purge", "--yes"], env=env, catch_exceptions=False)
    assert done.exit_code == 0 and done.stdout.strip() == "purged 3 delivered message(s) and 0 rejection(s)"
    assert {m.id for m in store.list_messages()} == {young, held}
    nothing_set = runner.invoke(main, ["db", "purge"], env={"PEM111_DATABASE_URL": database_url})
    assert nothing_set.exit_code == 2 and "nothing to purge" in nothing_set.stderr
    reindexed = runner.invoke(main, ["db", "reindex"], env=env, catch_exceptions=False)
    assert reindexed.exit_code == 0 and reindexed.stdout.strip() == "0 message(s) indexed"


def test_upgrading_to_step_4_copies_the_identifiers_and_reindex_reads_the_bundles(
    database_url: str, tmp_path: Path
) -> None:
    """A version-3 database with messages: the upgrade gives each an index row with its identifiers and received
    time (found by them at once), says how many ``nhs111 db reindex`` still has to read, and reindex reads their
    Bundles (found by patient from then on)."""
    from test_migrations import _insert_version_1_message

    store = MessageStore(database_url)
    store._make_sqlite_folder()
    with migrations.locked(store.engine) as conn:
        migrations._versions_metadata.create_all(conn)
        for step in migrations.STEPS[:3]:
            step.apply(conn)
            conn.execute(migrations.schema_version.insert().values(version=step.version, description="old",
                                                                   applied_at=utc_now()))  # fmt: skip
        bundle = json.dumps(patient_bundle("9990001235", "Testwell", "Margaret", "1942-10-17", "XS1 5WC"))
        for record_id in ("ABCDEF01-old", "ABCDEF02-old"):
            _insert_version_1_message(conn, record_id, bundle, "delivered")
    store.close()
    upgraded = CliRunner().invoke(main, ["db", "upgrade"], env={"PEM111_DATABASE_URL": database_url})
    assert upgraded.exit_code == 0, upgraded.output
    assert "applied step 4: search index" in upgraded.stdout
    assert "2 stored message(s) are found by their identifiers only until `nhs111 db reindex`" in upgraded.stdout
    store = MessageStore(database_url)
    try:
        assert ids(store, search="abcdef01") == {"ABCDEF01-old"}
        assert len(ids(store, since=utc_now() - timedelta(days=1))) == 2
        assert ids(store, name="testw") == set()
        reindexed = CliRunner().invoke(main, ["db", "reindex"], env={"PEM111_DATABASE_URL": database_url})
        assert reindexed.exit_code == 0 and reindexed.stdout.strip() == "2 message(s) indexed"
        assert ids(store, name="testw") == {"ABCDEF01-old", "ABCDEF02-old"}
    finally:
        store.close()
