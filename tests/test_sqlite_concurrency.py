"""Processes and threads opening and upgrading one new SQLite store at the same moment, round after round, as
``nhs111 serve``, ``nhs111 worker`` and ``nhs111 db upgrade`` do when started together on a new file: every open
and every upgrade succeeds (none fails with "database is locked"), and each migration step is applied once.

``NHS111_TEST_SQLITE_ROUNDS`` sets the number of rounds (each a new database file); the default keeps the test to a
few seconds in CI.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections import Counter
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, select, text

from adaptor.store import MessageStore, migrations

ROUNDS = int(os.environ.get("NHS111_TEST_SQLITE_ROUNDS", "15"))
PROCESSES = 3
THREADS = 3  # in each process: the first opens the store as a service would, the others upgrade it
BARRIER_TIMEOUT = 120


def _add_note(conn: Any) -> None:
    conn.execute(text("ALTER TABLE messages ADD COLUMN note TEXT"))


#: The next step, as a later release would add, so that an upgrade has more than one step to apply once.
NEXT_STEP = migrations.Step(migrations.head_version() + 1, "messages.note", _add_note)


def _one(database: str, index: int) -> tuple[str, tuple[int, ...]]:
    """Open (a service starting) or upgrade (``nhs111 db upgrade``) the store; the versions an upgrade applied."""
    store = MessageStore(f"sqlite:///{database}")
    try:
        if index == 0:
            store.open()
            return "open", ()
        return "upgrade", tuple(step.version for step in store.upgrade_schema().applied)
    finally:
        store.close()


def _process(databases: list[str], start: Barrier, results: Any, process: int) -> None:
    """One process: THREADS threads, all meeting every other process's at ``start`` before each round."""
    migrations.STEPS = (*migrations.STEPS, NEXT_STEP)

    def thread(index: int) -> None:
        for round_, database in enumerate(databases):
            start.wait(BARRIER_TIMEOUT)
            try:
                kind, applied = _one(database, index)
                results.put((round_, process, index, kind, applied, None))
            except BaseException as exc:  # noqa: BLE001 (reported to the parent, which fails the test)
                results.put((round_, process, index, "error", (), f"{type(exc).__name__}: {exc}"))

    threads = [threading.Thread(target=thread, args=(index,)) for index in range(THREADS)]
    for started in threads:
        started.start()
    for started in threads:
        started.join()


def test_processes_and_threads_open_and_upgrade_a_new_store_together(tmp_path: Path) -> None:
    databases = [str(tmp_path / f"round-{n}" / "data" / "messages.db") for n in range(ROUNDS)]
    context = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads and locks
    start = context.Barrier(PROCESSES * THREADS)
    results = context.Queue()
    began = time.monotonic()
    processes = [
        context.Process(target=_process, args=(databases, start, results, n), daemon=True) for n in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    expected = ROUNDS * PROCESSES * THREADS
    outcomes = [results.get(timeout=BARRIER_TIMEOUT) for _ in range(expected)]
    for process in processes:
        process.join(timeout=BARRIER_TIMEOUT)
        assert process.exitcode == 0
    elapsed = time.monotonic() - began

    errors = [outcome for outcome in outcomes if outcome[3] == "error"]
    assert errors == []
    for round_, database in enumerate(databases):
        applied = Counter(v for r, *_, kind, versions, _error in outcomes if r == round_ for v in versions)
        assert all(count == 1 for count in applied.values()), (round_, applied)
        engine = create_engine(f"sqlite:///{database}")
        try:
            with engine.connect() as conn:
                recorded = [row.version for row in conn.execute(select(migrations.schema_version))]
                mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        finally:
            engine.dispose()
        # An opener that came first created the whole schema at once; otherwise one upgrader applied each step.
        assert recorded == [s.version for s in migrations.STEPS] + [NEXT_STEP.version], (round_, recorded)
        assert mode == "wal"
    print(f"{ROUNDS} rounds, {PROCESSES} processes x {THREADS} threads: {expected} opens/upgrades in {elapsed:.1f} s")
