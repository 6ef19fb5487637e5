"""PostgreSQL for tests: throwaway databases on the machine's shared server, and a private server to stop.

The machine's PostgreSQL (``127.0.0.1:5432``, trust authentication) is shared by everyone: tests never touch
its existing databases. They create their own, named ``nhs111_test_<pid>_<random>``, and drop them afterwards
(``DROP DATABASE ... WITH (FORCE)``, which also ends connections a killed server process left behind). A
watchdog process drops them too if the test process dies first. ``PEM111_TEST_POSTGRES_URL`` names another
server (any database on it: it is only used to create and drop the test databases).

A test that stops the database (readiness, outage handling) must not stop the shared one: it uses a private
server instead, made with ``initdb`` in a temporary folder and run by ``pg_ctl`` on a free loopback port, as
the ``postgres`` user when the tests run as root (PostgreSQL refuses to run as root). Fixtures::

    def test_store(postgres_database: str) -> None:        # a fresh, empty database on the shared server
        store = MessageStore(postgres_database)              # postgresql://postgres@127.0.0.1:5432/nhs111_test_...

    def test_outage(private_postgres: PrivatePostgres) -> None:
        url = private_postgres.url                           # the private server's ``nhs111`` database
        private_postgres.stop()                              # a real, fast shutdown (pg_ctl stop -m fast)
        private_postgres.start()                             # same data; returns once it accepts connections
        other = private_postgres.new_database()              # a fresh database on the private server

``private_postgres`` is one server per test session (started on first use, about 2 s); ``running_postgres`` is
the same server, guaranteed running when the test starts and started again after a test that stopped it. The
fixtures are registered for every test module by ``pytest_plugins`` in ``tests/conftest.py``: a test names them
and imports only the types it annotates with (``PrivatePostgres``). When no database can be had the tests are
skipped on a developer machine but FAIL when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from unavailable import unavailable

DEFAULT_SHARED_URL = "postgresql://postgres@127.0.0.1:5432/test"
STARTUP_TIMEOUT_SECONDS = 60
SERVER_USER = "postgres"  # who runs the private server when the tests run as root
DATABASE_PREFIX = "nhs111_test_"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL could be had (server down, binaries missing, or the private server did not start)."""



def _connect(url: str, timeout: float = 5.0) -> Any:
    import psycopg

    return psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=max(1, int(timeout)))


def _libpq_url(url: str) -> str:
    """A SQLAlchemy-style ``postgresql+psycopg://`` URL as libpq wants it."""
    scheme, _, rest = url.partition("://")
    return f"postgresql://{rest}" if scheme.startswith(("postgresql", "postgres")) else url


def _with_database(url: str, database: str) -> str:
    """``url`` naming ``database`` instead of its own (query parameters kept)."""
    scheme, _, rest = url.partition("://")
    location, _, query = rest.partition("?")
    host = location.split("/", 1)[0]
    return f"{scheme}://{host}/{database}" + (f"?{query}" if query else "")


def _new_database_name() -> str:
    return f"{DATABASE_PREFIX}{os.getpid()}_{secrets.token_hex(4)}"


# Runs in its own process: when the test process disappears without cleaning up, drop the databases it created
# (their names are appended to a file as they are made; only names with our prefix are ever dropped).
_DATABASE_WATCHDOG = r"""
import os, sys, time
parent, admin_url, names_file, prefix = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(parent):
    time.sleep(1)
try:
    import psycopg
    names = [n.strip() for n in open(names_file).read().split() if n.strip().startswith(prefix)]
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
except Exception:
    pass
try:
    os.unlink(names_file)
except OSError:
    pass
"""


class SharedPostgres:
    """Throwaway databases on the machine's (or ``PEM111_TEST_POSTGRES_URL``'s) server."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._created: list[str] = []
        handle, names_file = tempfile.mkstemp(prefix="nhs111-test-databases-", suffix=".txt")
        os.close(handle)
        self._names_file = Path(names_file)
        self._watchdog: subprocess.Popen[bytes] | None = None

    def check(self) -> None:
        """Raise :class:`PostgresUnavailable` unless the server answers and lets us create databases."""
        try:
            with _connect(self.admin_url) as conn:
                row = conn.execute(
                    "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
                ).fetchone()
        except Exception as exc:
            raise PostgresUnavailable(f"PostgreSQL at {self.admin_url} unavailable: {exc}") from exc
        if not row or not row[0]:
            raise PostgresUnavailable(f"the user of {self.admin_url} may not create databases")

    def new_database(self) -> str:
        """Create an empty database and return its URL (``postgresql://...``)."""
        name = _new_database_name()
        self._start_watchdog()
        with self._names_file.open("a") as names:
            names.write(name + "\n")
        with _connect(self.admin_url) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self._created.append(name)
        return _with_database(_libpq_url(self.admin_url), name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`new_database` (ending any connection still open to it)."""
        name = url.partition("?")[0].rsplit("/", 1)[-1]
        if name not in self._created:
            raise ValueError(f"{name} was not created by this session")
        with _connect(self.admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self._created.remove(name)

    def close(self) -> None:
        for name in list(self._created):
            with contextlib.suppress(Exception):
                self.drop_database(_with_database(self.admin_url, name))
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.poll() is None:
            watchdog.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(5)
        self._names_file.unlink(missing_ok=True)

    def _start_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.poll() is None:
            return
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DATABASE_WATCHDOG,
                str(os.getpid()),
                _libpq_url(self.admin_url),
                str(self._names_file),
                DATABASE_PREFIX,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


# -- a private server ----------------------------------------------------------------------------------------------


def postgres_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: ``$PG_BIN_DIR`` if set, else PATH's, else Debian's newest."""
    override = os.environ.get("PG_BIN_DIR", "")
    candidates = [override] if override else []
    found = shutil.which("pg_ctl")
    if found and not override:
        candidates.append(str(Path(found).resolve().parent))
    if not override:
        debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
        candidates.extend(debian)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Stops the private server when the test process disappears without stopping it, then removes its folder.
_SERVER_WATCHDOG = r"""
import os, shutil, subprocess, sys, time
parent, command, base = int(sys.argv[1]), sys.argv[2:-1], sys.argv[-1]
def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False
while alive(parent):
    time.sleep(1)
subprocess.run(command, capture_output=True, timeout=60)
shutil.rmtree(base, ignore_errors=True)
"""


class PrivatePostgres:
    """A PostgreSQL server owned by the test session; see the module docstring.

    ``url`` is ``postgresql://postgres@127.0.0.1:PORT/nhs111`` (trust authentication, loopback only). Data
    persists across :meth:`stop` / :meth:`start`. Tuned for tests: ``fsync`` off (a crash of the machine, not
    of the server, would lose data; nothing here needs that).
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = _free_port()
        # Not under pytest's temporary folder: that is private to root, and the server may run as postgres.
        self.base_dir = Path(tempfile.mkdtemp(prefix="nhs111-private-postgres-"))
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/nhs111"
        self._run_as = self._server_user()
        self._watchdog: subprocess.Popen[bytes] | None = None
        if self._run_as is not None:
            account = pwd.getpwnam(self._run_as)
            os.chown(self.base_dir, account.pw_uid, account.pw_gid)
        self._initdb()

    @staticmethod
    def _server_user() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no {SERVER_USER!r} user to run the server"
            ) from None
        return SERVER_USER

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / tool), *args]
        return ["runuser", "-u", self._run_as, "--", *command] if self._run_as else command

    def _run(self, tool: str, *args: str, timeout: float = STARTUP_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, timeout=timeout, cwd=self.base_dir
        )

    def _initdb(self) -> None:
        result = self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync"
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        settings = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base_dir}'",
            "fsync = off",
            "full_page_writes = off",
            "max_connections = 100",
            "logging_collector = off",
        ]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# nhs111 tests\n" + "\n".join(settings) + "\n")

    # -- lifecycle --------------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), timeout=30).returncode == 0

    def start(self, timeout: float = STARTUP_TIMEOUT_SECONDS) -> None:
        """Start the server (a no-op when it runs) and return once it accepts connections to :attr:`url`."""
        if not self.running:
            result = self._run(
                "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", str(int(timeout))
            )
            if result.returncode != 0:
                raise PostgresUnavailable(f"pg_ctl start failed: {result.stdout.strip()}\n{self.log_tail()}")
            self._start_watchdog()
        self._wait_until_ready(timeout)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: open connections are ended, as at a real shutdown; ``immediate``: a crash,
        recovered at the next start). A no-op when it is not running."""
        if self.running:
            result = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "60")
            if result.returncode != 0 and self.running:
                raise PostgresUnavailable(f"pg_ctl stop failed: {result.stderr.strip()}\n{self.log_tail()}")

    def close(self) -> None:
        """End of session: stop the server, remove its folder and the watchdog."""
        try:
            self.stop("immediate")
        finally:
            watchdog, self._watchdog = self._watchdog, None
            if watchdog is not None and watchdog.poll() is None:
                watchdog.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    watchdog.wait(5)
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def new_database(self) -> str:
        """Create an empty database on this server (it must be running) and return its URL."""
        name = _new_database_name()
        with _connect(_with_database(self.url, "postgres")) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return _with_database(self.url, name)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return "(no server log written)"
        return "\n".join(self.log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    # -- internals --------------------------------------------------------------------------------------------------

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with _connect(_with_database(self.url, "postgres"), timeout=2) as conn:
                    exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'nhs111'").fetchone()
                    if not exists:
                        conn.execute("CREATE DATABASE nhs111")
                return
            except Exception as exc:  # still starting
                last_error = exc
                time.sleep(0.1)
        raise PostgresUnavailable(
            f"private PostgreSQL not ready within {timeout} s ({last_error!r}):\n{self.log_tail()}"
        )

    def _start_watchdog(self) -> None:
        if self._watchdog is not None and self._watchdog.poll() is None:
            return
        stop = self._command("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _SERVER_WATCHDOG, str(os.getpid()), *stop, str(self.base_dir)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )


def start_private_postgres() -> PrivatePostgres:
    """A running :class:`PrivatePostgres`; the caller must :meth:`~PrivatePostgres.close` it."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise PostgresUnavailable("initdb/pg_ctl not found (Debian: apt-get install postgresql; or set PG_BIN_DIR)")
    server = PrivatePostgres(bin_dir)
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return server


# -- fixtures ------------------------------------------------------------------------------------------------------

_shared: SharedPostgres | None = None
_shared_failure: str | None = None
_private: PrivatePostgres | None = None
_private_failure: str | None = None


@pytest.fixture(scope="session")
def shared_postgres() -> Iterator[SharedPostgres]:
    """The shared server, checked once per session; the databases made through it are dropped at the end.

    One per test process (kept at module level, so that it is one even if the fixture were registered twice).
    """
    global _shared, _shared_failure
    if _shared_failure is not None:
        unavailable(_shared_failure)
    if _shared is None:
        server = SharedPostgres(os.environ.get("PEM111_TEST_POSTGRES_URL") or DEFAULT_SHARED_URL)
        try:
            server.check()
        except PostgresUnavailable as exc:
            server.close()
            _shared_failure = str(exc)
            unavailable(_shared_failure)
        _shared = server
    server = _shared
    yield server
    if _shared is server:
        _shared = None
        server.close()


@pytest.fixture
def postgres_database(shared_postgres: SharedPostgres) -> Iterator[str]:
    """A fresh, empty database on the shared server (its ``postgresql://`` URL), dropped after the test."""
    url = shared_postgres.new_database()
    yield url
    shared_postgres.drop_database(url)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """The session's private server, started on first use and removed at the end. Prefer
    :func:`running_postgres` in tests that need it up: an earlier test may have stopped it."""
    global _private, _private_failure
    if _private_failure is not None:
        unavailable(_private_failure)
    if _private is None:
        try:
            _private = start_private_postgres()
        except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
            _private_failure = f"private PostgreSQL unavailable: {exc}"
            unavailable(_private_failure)
    server = _private
    assert server is not None
    yield server
    if _private is server:
        _private = None
        server.close()


@pytest.fixture
def running_postgres(private_postgres: PrivatePostgres) -> Iterator[PrivatePostgres]:
    """The private server, running when the test starts; started again after a test that stopped it."""
    try:
        private_postgres.start()
    except PostgresUnavailable as exc:
        unavailable(f"private PostgreSQL did not restart: {exc}")
    yield private_postgres
    if not private_postgres.running:
        private_postgres.start()
