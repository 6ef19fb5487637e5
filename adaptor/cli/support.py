"""What the commands share: one-line failures, one-line usage errors, and the configured store (opened to read, or
to write)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from adaptor.config import ConfigError, Settings
from adaptor.store import MessageStore, StoreError


def fail(text: str) -> NoReturn:
    """End the command with ``Error: <text>`` on stderr and exit status 2 (never a traceback)."""
    click.echo(f"Error: {text}", err=True)
    sys.exit(2)


class OneLineUsageError(click.ClickException):
    """A usage error shown as one line, ``Error: <what> (see '<command> --help')``, with exit status 2."""

    exit_code = 2


class OneLineErrors(click.Group):
    """A command group whose usage errors (an unknown command or option, a missing argument, a value out of range)
    are one line with exit status 2, like every other error of the command line, instead of click's block of
    usage, hint and error. It covers its subcommands, which are parsed and run inside :meth:`invoke`."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _one_line(exc: click.UsageError) -> click.ClickException:
    if isinstance(exc, click.exceptions.NoArgsIsHelpError):
        return exc  # a group run without a command: its help, as asked
    hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
    return OneLineUsageError(" ".join(exc.format_message().split()) + hint)


def settings_or_fail() -> Settings:
    """The settings from the environment; an unusable value ends the command in one line."""
    try:
        return Settings.from_env()
    except ConfigError as exc:
        fail(str(exc))


def _store(settings: Settings) -> MessageStore:
    try:
        return MessageStore.from_settings(settings)
    except ConfigError as exc:  # PEM111_DATABASE_URL is not a database URL
        fail(str(exc))


@contextmanager
def configured_store() -> Iterator[MessageStore]:
    """The configured store, closed afterwards; configuration and store failures end the command (exit 2).
    Opening it creates the store when there is none (``nhs111 db upgrade``)."""
    store = _store(settings_or_fail())
    try:
        yield store
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()


@contextmanager
def existing_store(*, empty_ok: bool = False) -> Iterator[MessageStore]:
    """The configured store for a command that reads it (or changes stored messages): one that does not exist
    ends the command in one line naming where it was looked for, rather than being created empty. A SQLite file
    that is not there does not exist; nor, unless ``empty_ok``, does a database without the store's tables."""
    settings = settings_or_fail()
    store = _store(settings)
    try:
        sqlite_file = store.sqlite_file
        where = "PEM111_DATABASE_URL" if settings.database_url else f"PEM111_DATA_DIR={settings.data_dir}"
        if sqlite_file is not None and not sqlite_file.is_file():
            fail(
                f"no message store at {sqlite_file.resolve()} (from {where}): run the command where the adaptor "
                "keeps its data, or set PEM111_DATA_DIR or PEM111_DATABASE_URL to its store (`nhs111 db upgrade` "
                "creates a new one)"
            )
        if not empty_ok and store.schema_state().empty:
            fail(f"the message store {store.url} (from {where}) is empty: nothing has been stored in it yet")
        yield store
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()
