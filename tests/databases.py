"""Fixtures for tests that run on both databases the store supports: a new SQLite file and a fresh PostgreSQL database.

Registered for every test module by ``pytest_plugins`` in ``tests/conftest.py``, so tests name them and import
nothing::

    def test_something(store: MessageStore) -> None:      # runs twice: [sqlite] and [postgresql]
        ...

A test that only makes sense on one of them narrows the parameter::

    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
    def test_sqlite_only(store: MessageStore) -> None: ...

and a module about one database overrides ``database_url`` (as ``tests/test_store_postgres.py`` does). The
PostgreSQL case uses :func:`postgres.postgres_database`: when no server is reachable it is skipped on a developer
machine and FAILS under CI (see ``tests/unavailable.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adaptor.store import MessageStore

DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file that does not exist yet, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'messages.db'}"
    return str(request.getfixturevalue("postgres_database"))


@pytest.fixture
def store(database_url: str) -> Iterator[MessageStore]:
    """An opened :class:`MessageStore` on :func:`database_url`, closed after the test."""
    opened = MessageStore(database_url)
    opened.open()
    yield opened
    opened.close()
