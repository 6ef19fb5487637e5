"""``nhs111 db upgrade`` and ``nhs111 db current``: the message store's schema (see :mod:`adaptor.store.migrations`).

Both act on the store named by ``PEM111_DATABASE_URL`` / ``PEM111_DATA_DIR``, the one the servers and workers
use; ``current`` refuses a SQLite file that is not there rather than create it. Errors are one line with exit
status 2, never a traceback.

``db`` is a standalone :class:`click.Group`; :mod:`adaptor.cli` adds it to the ``nhs111`` group.
"""

from __future__ import annotations

import click

from adaptor.cli.support import configured_store, existing_store
from adaptor.store import migrations


def _describe_state(state: migrations.SchemaState) -> str:
    head = migrations.head_version()
    if state.empty:
        return f"empty (no tables yet): `nhs111 db upgrade`, or the first `nhs111 serve`, creates version {head}"
    if state.unversioned:
        return f"version 0: tables from before schema versioning; `nhs111 db upgrade` brings it to version {head}"
    if state.number < head:
        return f"version {state.number}: behind this adaptor's version {head}; run `nhs111 db upgrade`"
    if state.number > head:
        return f"version {state.number}: newer than this adaptor's version {head}"
    return f"version {state.number}: up to date"


@click.group()
def db() -> None:
    """The message store's schema: create it, migrate it, show its version."""


@db.command()
def upgrade() -> None:
    """Create the schema, or apply the migration steps this database has not had yet, in one transaction.

    Safe to run again (it then changes nothing) and from several replicas at once (one of them migrates, the
    others wait and find nothing to do). Back the database up first. `nhs111 serve` and `nhs111 worker` refuse
    a database that needs this.
    """
    with configured_store() as store:
        result = store.upgrade_schema()
        url = store.url
    for step in result.applied:
        click.echo(f"applied step {step.version}: {step.description}")
    before = result.before
    if result.applied:
        was = "empty" if before.empty else f"version {before.number}"
        click.echo(f"{url}: now at schema version {result.after} (was {was})")
    elif before.number > migrations.head_version():
        click.echo(f"{url}: at schema version {before.number}, newer than this adaptor's; nothing to do")
    else:
        click.echo(f"{url}: already at schema version {before.number}; nothing to do")


@db.command()
def current() -> None:
    """Show the database's schema version, this adaptor's, and the steps applied so far (a store that does not
    exist is not created)."""
    with existing_store(empty_ok=True) as store:
        state = store.schema_state()
        url = store.url
    click.echo(f"database: {url}")
    click.echo(f"schema:   {_describe_state(state)}")
    for step in state.history:
        click.echo(f"  {step.version:>3}  {step.applied_at:%Y-%m-%d %H:%M:%S}Z  {step.description}")
