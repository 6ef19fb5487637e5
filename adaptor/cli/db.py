"""``nhs111 db upgrade|current|reindex|purge``: the message store's schema (see :mod:`adaptor.store.migrations`),
its search index and retention (see :mod:`adaptor.store.upkeep`).

They act on the store named by ``PEM111_DATABASE_URL`` / ``PEM111_DATA_DIR``, the one the servers and workers
use; ``current`` refuses a SQLite file that is not there rather than create it. Errors are one line with exit
status 2, never a traceback.

``db`` is a standalone :class:`click.Group`; :mod:`adaptor.cli` adds it to the ``nhs111`` group.
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from adaptor.cli.support import configured_store, existing_store, fail, settings_or_fail
from adaptor.ops.logs import escape_control
from adaptor.store import RetentionPolicy, migrations


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
        unindexed = store.unindexed_count() if result.applied else 0
    for step in result.applied:
        click.echo(f"applied step {step.version}: {step.description}")
    before = result.before
    if result.applied:
        was = "empty" if before.empty else f"version {before.number}"
        click.echo(f"{url}: now at schema version {result.after} (was {was})")
        if unindexed:
            click.echo(
                f"{unindexed} stored message(s) are found by their identifiers only until `nhs111 db reindex` "
                "reads their Bundles into the search index (it can run while the adaptor serves)"
            )
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


@db.command()
@click.option("--all", "everything", is_flag=True, help="Rebuild every message's index row, not only the missing.")
def reindex(everything: bool) -> None:
    """Fill the search index from the stored Bundles: the messages stored before schema version 4 (found by their
    identifiers only until then), or stored by a replica of an earlier release. In batches, each its own short
    transaction: safe while the adaptor serves, and to stop and run again."""
    with existing_store() as store:
        written = store.reindex(
            everything=everything,
            progress=lambda done: click.echo(f"\r{done} message(s) indexed", nl=False, err=True),
        )
    if written:
        click.echo(err=True)
    click.echo(f"{written} message(s) indexed")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@db.command()
@click.option("--dry-run/--yes", "dry_run", default=True, help="List what would be purged (the default), or purge it.")
def purge(dry_run: bool) -> None:
    """Apply the retention settings: delete delivered messages delivered more than PEM111_RETENTION_DELIVERED_DAYS
    ago (with their delivery attempts, Bundle versions, index row and replays) and rejections older than
    PEM111_RETENTION_REJECTIONS_DAYS. Nothing undelivered is ever purged: pending, retrying, held, dead-lettered or
    rejected messages stay whatever their age.

    By default a dry run: one line per message and per rejection that would be deleted (tab-separated, with a
    header), and the counts. --yes deletes exactly what the dry run lists at the same moment.
    """
    settings = settings_or_fail()
    policy = RetentionPolicy.from_settings(settings)
    if policy.keeps_everything:
        fail("nothing to purge: set PEM111_RETENTION_DELIVERED_DAYS or PEM111_RETENTION_REJECTIONS_DAYS (days)")
    with existing_store() as store:
        if not dry_run:
            result = store.purge(policy)
            click.echo(f"purged {result.messages} delivered message(s) and {result.rejections} rejection(s)")
            return
        messages = rejections = 0
        if policy.delivered_before is not None:
            click.echo("kind\trecord id\tMessageID\treceived\tdelivered")
            for message in store.purgeable_messages(policy):
                messages += 1
                cells = ["message", message.record_id, message.message_id, _when(message.received_at)]
                click.echo("\t".join(map(escape_control, [*cells, _when(message.delivered_at)])))
        if policy.rejections_before is not None:
            click.echo("kind\tid\tMessageID\trejected\trule/ErrorCode")
            for rejection in store.purgeable_rejections(policy):
                rejections += 1
                cells = ["rejection", str(rejection.id), rejection.message_id or "-", _when(rejection.rejected_at)]
                rule = f"{rejection.rule or '-'}/{rejection.error_code}"
                click.echo("\t".join(map(escape_control, [*cells, rule])))
    kept = {"delivered messages": policy.delivered_before, "rejections": policy.rejections_before}
    before = "; ".join(f"{k} before {_when(v)}" for k, v in kept.items() if v is not None)
    click.echo(
        f"dry run: would purge {messages} delivered message(s) and {rejections} rejection(s) ({before}); "
        "`nhs111 db purge --yes` purges them",
        err=True,
    )
