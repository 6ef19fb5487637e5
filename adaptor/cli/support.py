"""What the store-reading commands (`nhs111 messages`, `nhs111 db`) share: one-line failures and the store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from adaptor.config import ConfigError, Settings
from adaptor.store import MessageStore, StoreError


def fail(text: str) -> NoReturn:
    """End the command with ``Error: <text>`` on stderr and exit status 2 (never a traceback)."""
    click.echo(f"Error: {text}", err=True)
    sys.exit(2)


@contextmanager
def configured_store() -> Iterator[MessageStore]:
    """The configured store, closed afterwards; configuration and store failures end the command (exit 2)."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        fail(str(exc))
    store = MessageStore.from_settings(settings)
    try:
        yield store
    except StoreError as exc:
        fail(str(exc))
    finally:
        store.close()
