"""Schema versions on SQLite and PostgreSQL: an empty database is created at this adaptor's version, a database
from before versioning is adopted by ``nhs111 db upgrade``, older ones are refused with the remedy named,
upgrades are atomic, idempotent and safe to run from several replicas at once, and the steps build exactly the
tables :mod:`adaptor.store` uses."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_fixture import REPO, nhs111_command
from sqlalchemy import Engine, create_engine, inspect, select, text
from sqlalchemy.engine import Connection
from test_store import make_message

from adaptor.store import (
    MessageStore,
    SchemaVersionError,
    metadata,
    migrations,
    sqlalchemy_url,
    utc_now,
    versions_not_kept,
)

# -- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A bare engine on the database, for arranging and inspecting it behind the store's back."""
    url = sqlalchemy_url(database_url)
    if url.database and url.get_backend_name() == "sqlite":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    bare = create_engine(url)
    yield bare
    bare.dispose()


def make_version_0(engine: Engine, *, without: tuple[str, ...] = ()) -> None:
    """A database as adaptor 0.1 left it: the version-1 tables (but ``without``), no ``schema_version``."""
    tables = migrations.version_1_tables()
    tables.create_all(engine, tables=[t for t in tables.sorted_tables if t.name not in without])


def versions(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [row.version for row in conn.execute(select(migrations.schema_version))]


def open_store(database_url: str) -> MessageStore:
    store = MessageStore(database_url)
    store.open()
    return store


#: This adaptor's schema version, every version up to it, and the one a later release would add.
HEAD = migrations.head_version()
ALL = list(range(1, HEAD + 1))
NEXT = HEAD + 1


@pytest.fixture
def step_next(monkeypatch: pytest.MonkeyPatch) -> migrations.Step:
    """The next version, as a later release would add: ``messages.note``, a nullable column."""

    def add_note(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute(text("ALTER TABLE messages ADD COLUMN note TEXT"))

    step = migrations.Step(NEXT, "messages.note", add_note)
    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, step))
    return step


# -- creating -------------------------------------------------------------------------------------------------------


def test_an_empty_database_is_created_at_this_adaptors_version(database_url: str, engine: Engine) -> None:
    store = open_store(database_url)
    try:
        state = store.schema_state()
        assert state.version == HEAD
        assert state.tables == migrations.STORE_TABLES
        assert [applied.version for applied in state.history] == ALL
        assert all(applied.applied_at.tzinfo is not None for applied in state.history)
        record_id, _ = store.accept(make_message(), b"x")
        assert store.get(record_id) is not None
    finally:
        store.close()
    assert versions(engine) == ALL


def test_the_steps_build_exactly_the_tables_the_store_uses(database_url: str, engine: Engine) -> None:
    """The steps (from the frozen version-1 tables on) and :data:`adaptor.store.metadata` must not drift apart:
    compare what the database reflects after the steps with what the store's tables would create."""
    open_store(database_url).close()
    reflected = _layout(engine)
    expected_engine = _twin_engine(database_url, engine)
    try:
        metadata.create_all(expected_engine)
        assert reflected == _layout(expected_engine)
    finally:
        expected_engine.dispose()


def test_a_database_with_other_applications_tables_counts_as_empty(database_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE someone_elses (id INTEGER PRIMARY KEY)"))
    open_store(database_url).close()
    assert versions(engine) == ALL


# -- version 0: databases from before versioning ---------------------------------------------------------------------


def test_a_version_0_database_is_refused_then_adopted_by_upgrade_with_its_data(
    database_url: str, engine: Engine
) -> None:
    make_version_0(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO rejections (rejected_at, rule, error_code, error_text, error_id) "
                          "VALUES (CURRENT_TIMESTAMP, 'C4', 1000, 'old', 'E-OLD')"))  # fmt: skip

    refused = MessageStore(database_url)
    with pytest.raises(SchemaVersionError, match=r"predates schema versioning.*nhs111 db upgrade"):
        refused.open()
    with pytest.raises(SchemaVersionError):  # every call, not only the first
        refused.count_messages()
    refused.close()
    assert "schema_version" not in inspect(engine).get_table_names()  # refusing changed nothing

    upgrader = MessageStore(database_url)
    result = upgrader.upgrade_schema()
    upgrader.close()
    assert result.before.unversioned and [s.version for s in result.applied] == ALL and result.after == HEAD

    store = open_store(database_url)
    try:
        history = store.schema_state().history[0]
        assert "adopted" in history.description
        [old] = store.list_rejections()
        assert old.error_id == "E-OLD"
    finally:
        store.close()


def test_a_version_0_database_from_before_the_rejections_table_gets_it(database_url: str, engine: Engine) -> None:
    make_version_0(engine, without=("rejections",))
    upgrader = MessageStore(database_url)
    upgrader.upgrade_schema()
    upgrader.close()
    assert "rejections" in inspect(engine).get_table_names()
    open_store(database_url).close()


def test_tables_of_another_layout_are_refused_by_upgrade_and_nothing_changes(database_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE outbox (record_id VARCHAR(36) PRIMARY KEY, claimed_by TEXT NOT NULL)"))
    upgrader = MessageStore(database_url)
    with pytest.raises(SchemaVersionError, match=r"incompatible layout.*outbox"):
        upgrader.upgrade_schema()
    upgrader.close()
    assert set(inspect(engine).get_table_names()) == {"outbox"}  # no half-made schema left behind


# -- later versions -------------------------------------------------------------------------------------------------


def test_an_older_version_is_refused_until_upgraded(database_url: str, engine: Engine, step_next) -> None:  # noqa: ANN001
    with migrations.locked(engine) as conn:  # a database at this version, as the previous release left it
        migrations._versions_metadata.create_all(conn)
        for step in migrations.STEPS[:-1]:
            step.apply(conn)
            conn.execute(
                migrations.schema_version.insert().values(version=step.version, description="old", applied_at=_now())
            )

    refused = MessageStore(database_url)
    with pytest.raises(
        SchemaVersionError, match=rf"at schema version {HEAD}; this adaptor needs version {NEXT}.*db upgrade"
    ):
        refused.open()
    refused.close()

    upgrader = MessageStore(database_url)
    result = upgrader.upgrade_schema()
    again = upgrader.upgrade_schema()
    upgrader.close()
    assert [s.version for s in result.applied] == [NEXT] and result.after == NEXT
    assert again.applied == () and again.before.version == NEXT  # idempotent
    assert versions(engine) == [*ALL, NEXT]
    assert "note" in {c["name"] for c in inspect(engine).get_columns("messages")}
    open_store(database_url).close()


def test_a_failing_step_leaves_the_database_as_it_was(database_url: str, engine: Engine, monkeypatch) -> None:  # noqa: ANN001
    open_store(database_url).close()

    def half_done(conn) -> None:  # type: ignore[no-untyped-def]
        conn.execute(text("ALTER TABLE messages ADD COLUMN note TEXT"))
        conn.execute(text("CREATE TABLE scratch (id INTEGER)"))
        raise RuntimeError("the step failed half-way")

    monkeypatch.setattr(migrations, "STEPS", (*migrations.STEPS, migrations.Step(NEXT, "broken", half_done)))
    upgrader = MessageStore(database_url)
    with pytest.raises(RuntimeError, match="half-way"):
        upgrader.upgrade_schema()
    upgrader.close()
    assert versions(engine) == ALL
    assert "note" not in {c["name"] for c in inspect(engine).get_columns("messages")}
    assert "scratch" not in inspect(engine).get_table_names()


def test_a_newer_compatible_version_is_used_with_a_warning(
    database_url: str, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: the next release migrated (adding a nullable column); this one keeps working."""
    open_store(database_url).close()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE messages ADD COLUMN note TEXT"))
        conn.execute(migrations.schema_version.insert().values(version=NEXT, description="later", applied_at=_now()))

    with caplog.at_level(logging.WARNING, logger="adaptor.store"):
        store = open_store(database_url)
    try:
        store.accept(make_message(), b"x")
    finally:
        store.close()
    assert "newer than this adaptor" in caplog.text


def test_a_newer_incompatible_version_is_refused(database_url: str, engine: Engine) -> None:
    open_store(database_url).close()
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0"))
        conn.execute(text("CREATE TABLE scratch (id INTEGER)"))
        conn.execute(text("ALTER TABLE outbox RENAME COLUMN replays TO replay_count"))
        conn.execute(migrations.schema_version.insert().values(version=NEXT, description="later", applied_at=_now()))
    store = MessageStore(database_url)
    with pytest.raises(SchemaVersionError, match=rf"newer than this adaptor's {HEAD}.*outbox lacks replays"):
        store.open()
    store.close()


def test_step_2_keeps_a_bundle_already_sent_as_version_1(database_url: str, engine: Engine) -> None:
    """Version 1 kept the Bundle of a message's first attempt: that is the Bundle its consumers have, so it
    becomes version 1 and is what every later attempt sends; a message without one gets it at its next attempt."""
    with migrations.locked(engine) as conn:
        migrations._versions_metadata.create_all(conn)
        migrations.STEPS[0].apply(conn)
        conn.execute(migrations.schema_version.insert().values(version=1, description="v1", applied_at=_now()))
    old = MessageStore(database_url)
    try:
        with migrations.locked(old.engine) as conn:  # two messages as version 1 stored them
            for record_id, bundle in (("with-bundle", '{"sent": 1}'), ("without", None)):
                _insert_version_1_message(conn, record_id, bundle, "retrying")
        old.upgrade_schema()
        kept = old.get("with-bundle")
        assert (kept.bundle, kept.bundle_version) == ('{"sent": 1}', 1)
        assert kept.converted_at is not None and kept.converted_at <= kept.updated_at  # the row's updated_at
        assert (old.get("without").bundle, old.get("without").bundle_version) == (None, None)
        claims = {c.record_id: c for c in (old.claim_due("w", 60), old.claim_due("w", 60))}
        assert (claims["with-bundle"].bundle, claims["with-bundle"].bundle_version) == ('{"sent": 1}', 1)
        assert claims["without"].bundle is None
    finally:
        old.close()


def test_step_3_keeps_a_version_2_database_and_its_reconversions_then_keep_what_they_replace(
    database_url: str, engine: Engine
) -> None:
    """A database at version 2 with a message delivered as version 1 and one reconverted (by then, the Bundle it
    replaced was lost): the upgrade changes neither; from then on a reconversion keeps the Bundle it replaces."""
    with migrations.locked(engine) as conn:
        migrations._versions_metadata.create_all(conn)
        for step in migrations.STEPS[:2]:
            step.apply(conn)
            applied = {"version": step.version, "description": "old", "applied_at": _now()}
            conn.execute(migrations.schema_version.insert().values(**applied))
        for record_id in ("delivered", "reconverted"):
            _insert_version_1_message(conn, record_id, '{"sent": 1}', "delivered")
        conn.execute(text("UPDATE messages SET bundle_version = 1, converted_at = updated_at"))
        conn.execute(
            text("UPDATE messages SET bundle = :bundle, bundle_version = 2 WHERE id = 'reconverted'"),
            {"bundle": '{"sent": 2}'},
        )
        conn.execute(
            text(
                "INSERT INTO delivery_attempts (message_record_id, owner, target, started_at, finished_at, outcome, "
                "error, bundle_version) VALUES ('reconverted', 'w', 't', :at, :at, 'delivered', NULL, 2)"
            ),
            {"at": _now()},
        )

    refused = MessageStore(database_url)
    with pytest.raises(SchemaVersionError, match=rf"at schema version 2; this adaptor needs version {HEAD}"):
        refused.open()
    refused.close()
    upgrader = MessageStore(database_url)
    try:
        result = upgrader.upgrade_schema()
        assert [s.version for s in result.applied] == list(range(3, HEAD + 1)) and result.after == HEAD
        for record_id, bundle, version in (("delivered", '{"sent": 1}', 1), ("reconverted", '{"sent": 2}', 2)):
            kept = upgrader.get(record_id)
            assert kept is not None and (kept.bundle, kept.bundle_version, kept.status.value) == (
                bundle,
                version,
                "delivered",
            )
            [current] = upgrader.bundle_versions(record_id)
            assert (current.version, current.bundle, current.current) == (version, bundle, True)
        assert [a.bundle_version for a in upgrader.delivery_history("reconverted")] == [2]
        assert versions_not_kept(upgrader.bundle_versions("reconverted")) == [1]  # lost before this step

        upgrader.replay_reconverted("reconverted", '{"sent": 3}', _now())
        versions = upgrader.bundle_versions("reconverted")
        assert [(v.version, v.bundle, v.current) for v in versions] == [
            (2, '{"sent": 2}', False),
            (3, '{"sent": 3}', True),
        ]
    finally:
        upgrader.close()


# -- concurrency ----------------------------------------------------------------------------------------------------


def test_replicas_starting_together_create_the_schema_once(database_url: str, engine: Engine) -> None:
    """Eight stores (eight pools, as eight replicas) open an empty database at the same moment."""
    stores = [MessageStore(database_url) for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def open_one(store: MessageStore) -> None:
        try:
            start.wait()
            store.open()
            store.accept(make_message(), b"x")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert versions(engine) == ALL


def test_concurrent_upgrades_apply_each_step_once(database_url: str, engine: Engine, step_next) -> None:  # noqa: ANN001
    make_version_0(engine)
    stores = [MessageStore(database_url) for _ in range(6)]
    results: list[migrations.UpgradeResult] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def upgrade(store: MessageStore) -> None:
        try:
            start.wait()
            results.append(store.upgrade_schema())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    assert versions(engine) == [*ALL, NEXT]
    assert sorted(len(r.applied) for r in results) == [0] * 5 + [NEXT]


# -- the commands ---------------------------------------------------------------------------------------------------


def nhs111(
    tmp_path: Path, *args: str, database_url: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEM111_")}
    env.update(
        PEM111_DATA_DIR=str(tmp_path / "data"),
        PEM111_FORWARD_TARGET=f"dir:{tmp_path / 'outbox'}",
        PEM111_HOST="127.0.0.1",
        PEM111_PORT="0",
        PEM111_ITK_ACCEPT_ANY_ADDRESS="true",  # `serve` starts without an allow-list (the schema is under test)
    )
    if database_url:
        env["PEM111_DATABASE_URL"] = database_url
    return subprocess.run(
        [*nhs111_command(), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_db_current_and_upgrade_on_the_default_sqlite_store(tmp_path: Path) -> None:
    database = tmp_path / "data" / "messages.db"

    missing = nhs111(tmp_path, "db", "current")
    assert missing.returncode == 2, missing.stdout
    assert missing.stderr.startswith(f"Error: no message store at {database.resolve()} ") and missing.stdout == ""
    assert len(missing.stderr.splitlines()) == 1 and "`nhs111 db upgrade` creates a new one" in missing.stderr
    assert not database.exists()  # looking does not create it

    upgraded = nhs111(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "applied step 1" in upgraded.stdout and f"now at schema version {HEAD} (was empty)" in upgraded.stdout

    again = nhs111(tmp_path, "db", "upgrade")
    assert again.returncode == 0 and f"already at schema version {HEAD}; nothing to do" in again.stdout

    current = nhs111(tmp_path, "db", "current")
    assert current.returncode == 0
    assert f"version {HEAD}: up to date" in current.stdout
    assert f"sqlite:///{database.resolve()}" in current.stdout


#: The schema of a ``messages.db`` written by adaptor 0.1 (before versioning), as SQLite recorded it: the
#: ``sqlite_master`` of a database that 0.1's store created.
ADAPTOR_0_1_SQLITE = """
CREATE TABLE messages (
    id VARCHAR(36) NOT NULL, message_id TEXT NOT NULL, tracking_id TEXT NOT NULL, digest VARCHAR(64) NOT NULL,
    service TEXT NOT NULL, interaction TEXT NOT NULL, ods_codes TEXT NOT NULL, dos_ids TEXT NOT NULL,
    sender TEXT NOT NULL, received_at DATETIME NOT NULL, raw BLOB NOT NULL, bundle TEXT,
    updated_at DATETIME NOT NULL,
    PRIMARY KEY (id), CONSTRAINT uq_messages_identity UNIQUE (message_id, tracking_id, digest));
CREATE INDEX ix_messages_tracking_id ON messages (tracking_id);
CREATE INDEX ix_messages_message_id ON messages (message_id);
CREATE INDEX ix_messages_received_at ON messages (received_at);
CREATE TABLE rejections (
    id INTEGER NOT NULL, rejected_at DATETIME NOT NULL, rule VARCHAR(16) NOT NULL, error_code INTEGER NOT NULL,
    error_text TEXT NOT NULL, error_id VARCHAR(64) NOT NULL, message_id TEXT, tracking_id TEXT, sender_ods TEXT,
    PRIMARY KEY (id));
CREATE INDEX ix_rejections_rejected_at ON rejections (rejected_at);
CREATE TABLE outbox (
    record_id VARCHAR(36) NOT NULL, state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL,
    next_attempt_at DATETIME NOT NULL, lease_owner TEXT, lease_expires_at DATETIME, synchronous INTEGER NOT NULL,
    last_error TEXT, delivered_at DATETIME, replays INTEGER NOT NULL, updated_at DATETIME NOT NULL,
    PRIMARY KEY (record_id), FOREIGN KEY(record_id) REFERENCES messages (id));
CREATE INDEX ix_outbox_due ON outbox (state, next_attempt_at);
CREATE TABLE delivery_attempts (
    id INTEGER NOT NULL, message_record_id VARCHAR(36) NOT NULL, owner TEXT NOT NULL, target TEXT NOT NULL,
    started_at DATETIME NOT NULL, finished_at DATETIME, outcome VARCHAR(32), error TEXT,
    PRIMARY KEY (id), FOREIGN KEY(message_record_id) REFERENCES messages (id));
CREATE INDEX ix_delivery_attempts_outcome ON delivery_attempts (outcome);
CREATE INDEX ix_delivery_attempts_record ON delivery_attempts (message_record_id);
INSERT INTO messages VALUES ('6f1c7c1e-0000-4000-8000-000000000001', 'uuid:OLD-1', 'TRACK-1', 'ab12', 'svc',
    'urn:nhs-itk:interaction:x', '["XGP101"]', '[]', 'urn:nhs-uk:identity:ods:XSEND',
    '2024-01-01 09:00:00.000000', X'3C6F6C642F3E', NULL, '2024-01-01 09:00:00.000000');
INSERT INTO outbox VALUES ('6f1c7c1e-0000-4000-8000-000000000001', 'retrying', 1, '2024-01-01 09:00:01.000000',
    NULL, NULL, 0, 'HTTP 503', NULL, 0, '2024-01-01 09:00:01.000000');
INSERT INTO delivery_attempts VALUES (1, '6f1c7c1e-0000-4000-8000-000000000001', 'host/1/abc/worker-1',
    'http://target', '2024-01-01 09:00:00.500000', '2024-01-01 09:00:01.000000', 'failed', 'HTTP 503');
INSERT INTO rejections VALUES (1, '2024-01-01 08:00:00.000000', 'C4', 1000, 'old', 'E-OLD', NULL, NULL, NULL);
"""


def test_a_messages_db_of_adaptor_0_1_is_refused_by_serve_and_worker_then_upgraded_with_its_data(
    tmp_path: Path,
) -> None:
    """``./var/messages.db`` as deployed: both long-running commands stop at once with exit status 2 and one
    line naming ``nhs111 db upgrade``; after it, the stored message is there and delivered as any other."""
    database = tmp_path / "data" / "messages.db"
    database.parent.mkdir(parents=True)
    with sqlite3.connect(database) as conn:
        conn.executescript(ADAPTOR_0_1_SQLITE)

    for command in ("serve", "worker"):
        refused = nhs111(tmp_path, command, timeout=60)
        assert refused.returncode == 2, refused.stderr
        [line] = [line for line in refused.stderr.splitlines() if "nhs111 db upgrade" in line]
        assert "predates schema versioning" in line and "Traceback" not in refused.stderr

    current = nhs111(tmp_path, "db", "current")
    assert "version 0" in current.stdout and "nhs111 db upgrade" in current.stdout
    upgraded = nhs111(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0 and "(was version 0)" in upgraded.stdout

    store = open_store(f"sqlite:///{database}")
    try:
        assert [r.error_id for r in store.list_rejections()] == ["E-OLD"]
        [old] = store.find_by_message_id("uuid:OLD-1")
        assert (old.status.value, old.raw, old.ods_codes) == ("retrying", b"<old/>", ("XGP101",))
        claim = store.claim_due("worker", 60)  # due since 2024: the retry is taken up where it was left
        assert claim is not None and claim.record_id == old.id and claim.attempt == 2
        assert [a.outcome.value for a in store.delivery_history(old.id) if a.outcome] == ["failed"]
    finally:
        store.close()


def test_db_commands_fail_in_one_line_when_the_database_is_unreachable(tmp_path: Path) -> None:
    for command in ("current", "upgrade"):
        failed = nhs111(tmp_path, "db", command, database_url="postgresql://nobody@127.0.0.1:1/none")
        assert failed.returncode == 2
        assert failed.stderr.startswith("Error: cannot ") and len(failed.stderr.strip().splitlines()) == 1


def test_db_upgrade_on_postgresql(tmp_path: Path, postgres_database: str) -> None:
    upgraded = nhs111(tmp_path, "db", "upgrade", database_url=postgres_database)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "postgresql+psycopg://" in upgraded.stdout and f"now at schema version {HEAD}" in upgraded.stdout
    current = nhs111(tmp_path, "db", "current", database_url=postgres_database)
    assert f"version {HEAD}: up to date" in current.stdout


# -- helpers --------------------------------------------------------------------------------------------------------


def _now():  # type: ignore[no-untyped-def]
    return utc_now()


def _insert_version_1_message(conn: Connection, record_id: str, bundle: str | None, state: str) -> None:
    """A message and its outbox row as a version-1 adaptor stored them (the columns later steps add left out)."""
    tables = migrations.version_1_tables()
    row = {c.name: None for c in tables.tables["messages"].c}
    row.update(
        id=record_id, message_id=record_id, tracking_id="T", digest=record_id, service="s", interaction="i",
        ods_codes="[]", dos_ids="[]", sender="x", received_at=_now(), raw=b"<r/>", bundle=bundle, updated_at=_now(),
    )  # fmt: skip
    conn.execute(tables.tables["messages"].insert().values(**row))
    conn.execute(tables.tables["outbox"].insert().values(
        record_id=record_id, state=state, attempts=1, next_attempt_at=_now(), synchronous=0, replays=0,
        updated_at=_now(),
    ))  # fmt: skip


def _twin_engine(database_url: str, engine: Engine) -> Engine:
    """An empty database of the same kind as ``database_url``'s, for the store's own tables."""
    if engine.dialect.name == "sqlite":
        path = Path(str(sqlalchemy_url(database_url).database)).with_name("expected.db")
        return create_engine(f"sqlite:///{path}")
    # PostgreSQL: a schema of its own in the same database.
    with engine.begin() as conn:
        conn.execute(text("CREATE SCHEMA expected"))
    return create_engine(engine.url, connect_args={"options": "-c search_path=expected"})


def _layout(engine: Engine) -> dict[str, object]:
    """What matters of each store table: columns (type, nullability), primary key, foreign keys, unique
    constraints and indexes, as the database reports them."""
    inspector = inspect(engine)
    layout: dict[str, object] = {}
    for table in sorted(migrations.STORE_TABLES):
        layout[table] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            "pk": inspector.get_pk_constraint(table)["constrained_columns"],
            "fks": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"]) for f in inspector.get_foreign_keys(table)
            ),
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(table)),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
        }
    return layout
