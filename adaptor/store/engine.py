"""The database behind the store: the URL, the engine and its connections (PostgreSQL's connect arguments,
SQLite's pragmas), opening (the schema created when empty, its version checked otherwise), ``nhs111 db``'s upgrade
and state, and the transactions every store call runs in.

Every database failure surfaces here as :class:`~adaptor.store.records.StoreError`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, Self

from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from adaptor.config import ConfigError, Settings
from adaptor.store import migrations
from adaptor.store.records import SchemaVersionError, StoreError
from adaptor.store.schema import metadata

log = logging.getLogger("adaptor.store")  # pinned: the JSON log format names it

#: How long a writer waits for another thread's SQLite transaction before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: PostgreSQL connections each process keeps beyond one per request thread and one per delivery thread: the
#: pool is sized from the settings (see :meth:`StoreEngine.from_settings`) and never grows past that, so a
#: replica's share of the server's ``max_connections`` is known in advance.
POOL_MARGIN = 4

#: How long opening a PostgreSQL connection may take before the call fails (and is answered 2100), in seconds.
CONNECT_TIMEOUT_SECONDS = 10

#: URL schemes taken to mean PostgreSQL through psycopg 3 (SQLAlchemy's own default driver would be psycopg2).
_POSTGRESQL_SCHEMES = ("postgresql", "postgres")
#: The databases the store is written and tested for.
_BACKENDS = ("sqlite", "postgresql")
_URL_FORMS = "use sqlite:///PATH or postgresql://user:password@host:5432/db"


def _configure_sqlite(engine: Engine) -> None:
    """A busy timeout (writers queue instead of failing), WAL (readers never block the writer) and
    ``synchronous=FULL`` (a commit is on disk before it returns: the sender is told OK only after that).

    The busy timeout comes first, so that everything after it waits for other connections' locks."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            _use_wal(cursor)
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()


def _use_wal(cursor: Any) -> None:
    """Put the database in WAL mode unless it already is (the mode is kept in the file, so this changes
    something only on the first connection to a new or pre-WAL file).

    Changing the journal mode needs the file to itself, and SQLite answers "database is locked" at once, without
    its busy handler, while any other connection holds a lock: which is exactly when processes or replicas start
    together on a new file. So the change is retried, with growing pauses, for up to the busy timeout. (An
    in-memory database answers ``memory`` to the change, and stays so.)
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def sqlalchemy_url(database_url: str) -> URL:
    """``PEM111_DATABASE_URL`` as SQLAlchemy should see it: ``postgresql://`` and ``postgres://`` (the form
    hosting platforms hand out) mean psycopg 3, ``postgresql+psycopg://``; any other URL is taken as it is."""
    scheme, separator, rest = database_url.partition("://")
    if separator and scheme.lower() in _POSTGRESQL_SCHEMES:
        database_url = f"postgresql+psycopg://{rest}"
    return make_url(database_url)


def _postgresql_connect_args(url: URL) -> dict[str, Any]:
    """Defaults a URL's own query parameters override: a bounded connect time (an unreachable server fails the
    call instead of hanging a request thread) and UTC as the session's time zone (naive times, which SQLite
    hands back and callers may pass, mean UTC everywhere)."""
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    if "options" not in url.query:
        connect_args["options"] = "-c TimeZone=UTC"
    return connect_args


class StoreEngine:
    """The engine and the schema checks of a :class:`~adaptor.store.MessageStore`, and the transactions its calls
    run in (the store's other parts build on this one)."""

    def __init__(self, database_url: str, *, pool_size: int | None = None) -> None:
        """``database_url``: a SQLAlchemy URL (see :func:`sqlalchemy_url`) of a SQLite or PostgreSQL database;
        anything else raises :class:`~adaptor.config.ConfigError`. ``pool_size``: how many connections a server
        database's pool keeps, and at most opens (SQLAlchemy's default when ``None``); SQLite keeps SQLAlchemy's
        defaults."""
        try:
            url = sqlalchemy_url(database_url)
        except ArgumentError:
            # Not echoed: a mistyped URL may still hold a password.
            raise ConfigError(f"PEM111_DATABASE_URL is not a database URL: {_URL_FORMS}") from None
        backend = url.get_backend_name()
        if backend not in _BACKENDS:
            raise ConfigError(f"PEM111_DATABASE_URL names a database this adaptor cannot use ({backend}): {_URL_FORMS}")
        self.is_sqlite = backend == "sqlite"
        self.is_postgresql = backend == "postgresql"
        engine_options: dict[str, Any] = {"future": True}
        if self.is_sqlite:
            # The busy timeout, not the pool, serialises writers; pysqlite's thread check is moot with a pool.
            engine_options["connect_args"] = {
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                "check_same_thread": False,
            }
        else:
            engine_options["pool_pre_ping"] = True  # a server restart leaves dead connections in the pool
            if pool_size is not None:
                engine_options.update(pool_size=pool_size, max_overflow=0)
        if self.is_postgresql:
            engine_options["connect_args"] = _postgresql_connect_args(url)
        self._url = url
        try:
            self.engine = create_engine(url, **engine_options)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:  # e.g. a driver that is not installed
            raise ConfigError(
                f"PEM111_DATABASE_URL: cannot use the database driver {url.drivername!r} ({type(exc).__name__})"
            ) from None
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        # SQLite has one writer at a time. Threads of this process queue for it here, in order and waking at
        # once, rather than in SQLite's busy handler, which sleeps in growing steps (up to 100 ms) between tries:
        # under concurrent requests those sleeps were most of the p99 latency. Other processes on the same file
        # (an ``nhs111 worker``) still meet the busy handler. A server database has row locks: no lock here.
        self._write_lock: AbstractContextManager[object] = threading.Lock() if self.is_sqlite else nullcontext()

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """The configured store, its pool sized for this process: a connection for each request thread and each
        delivery thread (each holds at most one at a time), and :data:`POOL_MARGIN` more."""
        pool_size = settings.server_threads + settings.delivery_workers + POOL_MARGIN
        return cls(settings.resolved_database_url, pool_size=pool_size)

    @property
    def url(self) -> str:
        """The database URL with any password masked (for logs)."""
        return self._url.render_as_string(hide_password=True)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Make sure the schema is one this code can use: create it (and the SQLite file's folder) when the
        database is empty, and refuse it otherwise unless it is at this adaptor's version (or a newer, compatible
        one). See :mod:`adaptor.store.migrations`. Raises :class:`StoreError`, and :class:`SchemaVersionError` when
        the schema is the problem."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                self._make_sqlite_folder()
                state = migrations.create_if_empty(self.engine)
                self._check_version(state)
            except migrations.SchemaError as exc:
                raise SchemaVersionError(f"the message store {self.url} has an {exc}; use a new database") from exc
            except (SQLAlchemyError, OSError) as exc:
                raise StoreError(f"cannot open the message store {self.url}: {_describe(exc)}") from exc
            self._schema_ready = True

    def _check_version(self, state: migrations.SchemaState) -> None:
        """Refuse a schema this code cannot use, by name, rather than failing on every insert later."""
        head = migrations.head_version()
        upgrade = "run `nhs111 db upgrade` (back the database up first)"
        if state.unversioned:
            # From before versioning: the layout check says whether it is ours at all.
            self._check_layout(migrations.version_1_tables().sorted_tables, only_present=state.tables)
            raise SchemaVersionError(
                f"the message store {self.url} predates schema versioning (version 0); this adaptor needs "
                f"version {head}: {upgrade}"
            )
        if state.number < head:
            raise SchemaVersionError(
                f"the message store {self.url} is at schema version {state.number}; this adaptor needs version "
                f"{head}: {upgrade}"
            )
        if state.number > head:
            problems = self._layout_problems(metadata.sorted_tables)
            if problems:
                raise SchemaVersionError(
                    f"the message store {self.url} is at schema version {state.number}, newer than this adaptor's "
                    f"{head}, and this adaptor cannot use it ({'; '.join(problems)}): run a newer adaptor"
                )
            log.warning(
                "the message store %s is at schema version %d, newer than this adaptor's %d; its layout is "
                "compatible, continuing (upgrade this adaptor)",
                self.url,
                state.number,
                head,
            )
            return
        self._check_layout(metadata.sorted_tables)

    def _layout_problems(self, tables: Sequence[Table]) -> list[str]:
        with self.engine.connect() as conn:
            return migrations.layout_problems(conn, tables)

    def _check_layout(self, tables: Sequence[Table], only_present: Iterable[str] | None = None) -> None:
        if only_present is not None:
            present = set(only_present)
            tables = [table for table in tables if table.name in present]
        problems = self._layout_problems(tables)
        if problems:
            raise migrations.SchemaError(
                f"incompatible layout ({'; '.join(problems)}): it was created by another version of the adaptor"
            )

    def open_if_available(self) -> bool:
        """:meth:`open`, but an unreachable database is logged instead of raised: the service starts anyway,
        answers 2100 meanwhile, and every call retries. Returns whether the store is open.

        A schema this adaptor cannot use (:class:`SchemaVersionError`) is not an outage that waiting would end:
        it is logged as one line naming the remedy (``nhs111 db upgrade``), and the process exits with status 2,
        as for any other configuration error.
        """
        try:
            self.open()
        except SchemaVersionError as exc:
            log.error("%s", exc)
            raise SystemExit(2) from None
        except StoreError as exc:
            log.warning("message store unavailable at start-up, answering 2100 until it is: %s", exc)
            return False
        return True

    def upgrade_schema(self) -> migrations.UpgradeResult:
        """``nhs111 db upgrade``: create the schema or apply the pending migration steps (see
        :func:`adaptor.store.migrations.upgrade`). Raises :class:`SchemaVersionError` for a layout that is not ours,
        :class:`StoreError` when the database fails."""
        try:
            self._make_sqlite_folder()
            return migrations.upgrade(self.engine)
        except migrations.SchemaError as exc:
            raise SchemaVersionError(f"the message store {self.url} has an {exc}; nothing was changed") from exc
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot upgrade the message store {self.url}: {_describe(exc)}") from exc

    def schema_state(self) -> migrations.SchemaState:
        """``nhs111 db current``: the database's schema version and history, read without changing anything
        (a SQLite file that does not exist yet is not created)."""
        sqlite_file = self._sqlite_file()
        if sqlite_file is not None and not sqlite_file.exists():
            return migrations.SchemaState(version=None, tables=frozenset())
        try:
            with self.engine.connect() as conn:
                return migrations.read_state(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the message store {self.url}: {_describe(exc)}") from exc

    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database's file, which may not exist yet; ``None`` for an in-memory or a server database."""
        return self._sqlite_file()

    def _sqlite_file(self) -> Path | None:
        """The SQLite database's file; ``None`` for an in-memory or a server database."""
        database = self._url.database
        if not self.is_sqlite or not database or database == ":memory:":
            return None
        if self._url.query.get("uri") in ("true", "1") and database.startswith("file:"):
            # A URI filename (``sqlite:///file:/path?mode=ro&uri=true``) names the file after ``file:``.
            return None if self._url.query.get("mode") == "memory" else Path(database.removeprefix("file:"))
        return Path(database)

    def _make_sqlite_folder(self) -> None:
        sqlite_file = self._sqlite_file()
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _transaction(self, *, writes: bool = True) -> Iterator[Connection]:
        """A committed-on-exit transaction; any database failure becomes :class:`StoreError`. One that only reads
        (``writes=False``) is not serialised with the writers: WAL readers never wait."""
        self.open()
        try:
            with self._write_lock if writes else nullcontext(), self.engine.begin() as conn:
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"message store failure: {_describe(exc)}") from exc

    def _reading(self) -> AbstractContextManager[Connection]:
        """A transaction that only reads (:meth:`_transaction`)."""
        return self._transaction(writes=False)


def _describe(exc: BaseException) -> str:
    """A one-line cause without the SQL statement or its parameters (they would carry message content).

    Only the driver message's first line: PostgreSQL's DETAIL lines can quote a whole row ("Failing row
    contains ..."), request bytes included.
    """
    if isinstance(exc, SQLAlchemyError):
        original = getattr(exc, "orig", None)
        if original is not None:
            first_line = (str(original).strip().splitlines() or [""])[0]
            return f"{type(original).__name__}: {first_line}"
        return type(exc).__name__
    return f"{type(exc).__name__}: {exc}"
