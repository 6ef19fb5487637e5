"""The command line's errors: every bad argument, option or setting value is one line ``Error: ...`` with exit
status 2, never a traceback or a library's exception; and the commands that read the store refuse one that is not
there, naming where they looked, rather than create it empty."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import REPO
from server_fixture import nhs111_command

from adaptor.cli.commands import main

SAMPLE = REPO / "samples" / "gp-referral.xml"

#: The commands that read the store (replay changes stored messages, but only ones it finds).
STORE_READERS = [
    ("messages", "list"),
    ("messages", "show", "SOME-ID"),
    ("messages", "show", "SOME-ID", "--raw"),
    ("db", "current"),
    ("replay", "SOME-ID"),
    ("replay", "--dead-letters"),
]


def environment(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Only these PEM111_ settings (CliRunner adds ``env`` to os.environ: the others are blanked, which reads as
    unset)."""
    blank = {key: "" for key in os.environ if key.startswith("PEM111_")}
    return {**blank, "PEM111_DATA_DIR": str(tmp_path / "data"), **settings}


def run(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env=env, prog_name="nhs111")


def assert_one_line_error(result: Result, *texts: str) -> str:
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # nothing raised past the command
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


# == a store that is not there ====================================================================================


@pytest.mark.parametrize("args", STORE_READERS, ids=" ".join)
def test_a_missing_store_is_named_not_created(tmp_path: Path, args: tuple[str, ...]) -> None:
    database = tmp_path / "data" / "messages.db"
    line = assert_one_line_error(run(environment(tmp_path), *args), f"no message store at {database}")
    assert f"(from PEM111_DATA_DIR={tmp_path / 'data'})" in line
    assert not (tmp_path / "data").exists()


def test_a_missing_store_named_by_the_database_url(tmp_path: Path) -> None:
    database = tmp_path / "elsewhere" / "store.db"
    env = environment(tmp_path, PEM111_DATABASE_URL=f"sqlite:///{database}")
    assert_one_line_error(run(env, "messages", "list"), f"no message store at {database} (from PEM111_DATABASE_URL)")
    assert not database.parent.exists()


def test_a_database_without_the_store_is_not_given_tables(tmp_path: Path) -> None:
    """A database that exists but holds no store (a wrong PEM111_DATABASE_URL): reading it adds nothing;
    ``db current`` says it is empty, as it is its job to."""
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as conn:
        conn.execute("CREATE TABLE unrelated (x INTEGER)")
    conn.close()
    env = environment(tmp_path, PEM111_DATABASE_URL=f"sqlite:///{database}")

    assert_one_line_error(run(env, "messages", "list"), f"the message store sqlite:///{database}", "is empty")
    assert_one_line_error(run(env, "replay", "--dead-letters"), "is empty")
    current = run(env, "db", "current")
    assert current.exit_code == 0 and "empty (no tables yet)" in current.stdout

    with sqlite3.connect(database) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert tables == {"unrelated"}


def test_an_existing_store_is_read(tmp_path: Path) -> None:
    env = environment(tmp_path)
    assert run(env, "db", "upgrade").exit_code == 0
    listed = run(env, "messages", "list")
    assert listed.exit_code == 0 and listed.stderr.strip() == "0 message(s)"
    current = run(env, "db", "current")
    assert current.exit_code == 0 and "up to date" in current.stdout


# == bad arguments and values =====================================================================================


@pytest.mark.parametrize(
    ("args", "texts"),
    [
        (("serve", "--port", "99999"), ("'--port'", "99999", "(see 'nhs111 serve --help')")),
        (("serve", "--port", "http"), ("'--port'",)),
        (("send", "--url", "notaurl", str(SAMPLE)), ("'--url'", "'notaurl' is not an http(s) URL")),
        (("send", "--url", "ftp://host/report", str(SAMPLE)), ("'--url'",)),
        (("send", "--url", "http://", str(SAMPLE)), ("'--url'",)),
        (("send", "--url", "http://[::1", str(SAMPLE)), ("'--url'",)),
        (("send", "--url", "http://127.0.0.1:99999/report", str(SAMPLE)), ("'--url'",)),
        (("send", "--url", "http://127.0.0.1:1/report", "--timeout", "0", str(SAMPLE)), ("'--timeout'",)),
        (("send", "--url", "http://127.0.0.1:1/report", "no-such-file.xml"), ("no-such-file.xml",)),
        (("send", "--url", "http://127.0.0.1:1/report", "--cert", "no-such.pem", str(SAMPLE)), ("'--cert'",)),
        (("send", str(SAMPLE)), ("'--url'",)),
        (("convert", "no-such-file.xml"), ("no-such-file.xml",)),
        (("convert",), ("FILE",)),
        (("samples", "--out", str(SAMPLE)), ("'--out'",)),
        (("messages", "list", "--limit", "0"), ("'--limit'",)),
        (("messages", "list", "--since", "soon"), ("--since 'soon'",)),
        (("messages", "list", "--status", "lost"), ("--status 'lost'",)),
        (("messages", "show"), ("'ID'", "(see 'nhs111 messages show --help')")),
        (("replay",), ("MESSAGE_ID",)),
        (("console", "hash-password", "--user", "a:b"), ("--user",)),
        (("db", "downgrade"), ("downgrade",)),
        (("no-such-command",), ("no-such-command", "(see 'nhs111 --help')")),
        (("--no-such-option",), ("--no-such-option",)),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) and value and not value[0].startswith("'") else "",
)
def test_a_bad_argument_is_one_line(tmp_path: Path, args: tuple[str, ...], texts: tuple[str, ...]) -> None:
    assert_one_line_error(run(environment(tmp_path), *args), *texts)


@pytest.mark.parametrize(
    ("settings", "args", "texts"),
    [
        ({"PEM111_PORT": "99999"}, ("serve",), ("PEM111_PORT must be at most 65535, not 99999",)),
        ({"PEM111_PORT": "http"}, ("worker",), ("PEM111_PORT",)),
        ({"PEM111_LOG_LEVEL": "loud"}, ("messages", "list"), ("PEM111_LOG_LEVEL",)),
        ({"PEM111_DATABASE_URL": "notaurl"}, ("messages", "list"), ("PEM111_DATABASE_URL is not a database URL",)),
        ({"PEM111_DATABASE_URL": "notaurl"}, ("db", "upgrade"), ("PEM111_DATABASE_URL",)),
        ({"PEM111_DATABASE_URL": "notaurl"}, ("replay", "SOME-ID"), ("PEM111_DATABASE_URL",)),
        ({"PEM111_DATABASE_URL": "mysql://u@host/db"}, ("db", "current"), ("cannot use (mysql)",)),
        ({"PEM111_DATABASE_URL": "postgresql+nosuchdriver://h/db"}, ("messages", "list"), ("PEM111_DATABASE_URL",)),
    ],
)
def test_a_bad_setting_is_one_line(
    tmp_path: Path, settings: dict[str, str], args: tuple[str, ...], texts: tuple[str, ...]
) -> None:
    assert_one_line_error(run(environment(tmp_path, **settings), *args), *texts)


def test_a_mistyped_database_url_is_not_echoed(tmp_path: Path) -> None:
    """The URL may hold the database password: the error names the setting, not its value."""
    env = environment(tmp_path, PEM111_DATABASE_URL="postgresq//nhs111:s3cret-pw@db:5432/nhs111")
    line = assert_one_line_error(run(env, "db", "current"), "PEM111_DATABASE_URL")
    assert "s3cret" not in line


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_long_running_commands_refuse_a_bad_database_url_in_one_line(tmp_path: Path, command: str) -> None:
    """Their errors are log lines (the configured format); still one, with exit status 2."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PEM111_")}
    env.update(
        PEM111_DATA_DIR=str(tmp_path / "data"),
        PEM111_DATABASE_URL="notaurl",
        PEM111_ITK_ODS_CODE_LIST="XGP101",
        PEM111_LOG_FORMAT="text",
        PEM111_PORT="0",
    )
    result = subprocess.run([*nhs111_command(), command], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert len(lines) == 1 and " ERROR " in lines[0] and "PEM111_DATABASE_URL is not a database URL" in lines[0]


def test_a_group_without_a_command_shows_its_help(tmp_path: Path) -> None:
    result = run(environment(tmp_path), "messages")
    assert "Commands:" in result.output and "list" in result.output and "Error" not in result.output
