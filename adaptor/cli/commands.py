"""The ``nhs111`` command line: serve the endpoint, run delivery workers, convert a message, and the operator
commands.

Flags override the ``PEM111_*`` environment (see :mod:`adaptor.config`). Errors are one line naming the problem,
with exit status 2; never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from adaptor.cli.messages import console, messages
from adaptor.cli.operator import samples, send
from adaptor.cli.support import OneLineErrors, existing_store, settings_or_fail
from adaptor.config import MAX_PORT, Settings


def _settings(**overrides: object) -> Settings:
    settings = settings_or_fail()
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nhs111-adaptor")
def main() -> None:
    """NHS 111 ITK receiver adaptor."""


@main.command()
@click.option("--host", help="Interface to listen on (PEM111_HOST, default 127.0.0.1).")
@click.option(
    "--port", type=click.IntRange(0, MAX_PORT), help="Port to listen on (PEM111_PORT, default 8080; 0: any free one)."
)
def serve(host: str | None, port: int | None) -> None:
    """Serve the ITK endpoint, the WSDL and the health check."""
    from adaptor.http.server import serve as run_server

    run_server(_settings(host=host, port=port))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--validate", is_flag=True, help="Also validate the Bundle with fhir.resources (STU3).")
def convert(file: Path, validate: bool) -> None:
    """Print the FHIR STU3 Encounter Report Bundle for FILE (SOAP request, DistributionEnvelope or
    ClinicalDocument) as JSON: exactly what is delivered."""
    from adaptor.delivery.conversion import ConversionError, validate_bundle
    from adaptor.delivery.conversion import convert as convert_request

    settings = _settings()
    try:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except OSError as exc:
        click.echo(f"Error: cannot read {file}: {exc.strerror}", err=True)
        sys.exit(2)
    try:
        bundle = convert_request(raw, config=settings)
    except ConversionError as exc:
        click.echo(f"Error: {file}: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(bundle, indent=2, ensure_ascii=False))
    if validate:
        problems = validate_bundle(bundle)
        for problem in problems:
            click.echo(f"invalid: {problem}", err=True)
        if problems:
            sys.exit(1)
        click.echo("valid FHIR STU3 Bundle", err=True)


@main.command()
def worker() -> None:
    """Deliver stored messages from the outbox, without serving HTTP (PEM111_DELIVERY_WORKERS threads, at
    least one). Use with PEM111_DELIVERY_WORKERS=0 on the servers to run delivery as a process of its own;
    any number of workers and servers may share one message store."""
    from adaptor.http.server import run_worker

    run_worker(_settings())


@main.command()
@click.argument("message_ids", nargs=-1, metavar="[MESSAGE_ID]...")
@click.option("--dead-letters", is_flag=True, help="Replay every dead-lettered message.")
@click.option("--rejected", is_flag=True, help="Reconvert every message rejected at acceptance (needs --reconvert).")
@click.option(
    "--reconvert",
    is_flag=True,
    help="Convert the stored request again and deliver the result as a new Bundle version (after a mapping fix), "
    "instead of redelivering the stored Bundle.",
)
def replay(message_ids: tuple[str, ...], dead_letters: bool, rejected: bool, reconvert: bool) -> None:
    """Queue messages for delivery again: every stored message with each MESSAGE_ID (a reused MessageID can
    name several), with --dead-letters every dead-lettered one, with --rejected every rejected one.

    By default each is *redelivered*: the target gets the stored Bundle again, byte for byte (same ids, file
    name, broker message id and properties). With --reconvert the request as received is converted again, so a
    mapping fix reaches old messages, and the result is delivered as the message's next Bundle version (same
    resource ids; a version property or header, or the folder's file replaced); the version it replaces is kept
    (`nhs111 messages show ID` lists the versions, --bundle-version N prints one). A message rejected at
    acceptance has no Bundle: only --reconvert delivers it. Each gets a full set of attempts; its delivery
    history is kept. A running server or worker delivers it within PEM111_DELIVERY_POLL_SECONDS. A message being
    delivered at this moment is left alone. Each replay is recorded in the message's history (`nhs111 messages
    show`, the console) as made by the user running this command. Exit status 1 when a MESSAGE_ID is not stored
    or a reconversion failed.
    """
    from adaptor.delivery.replay import CONVERSION_FAILED, redeliver
    from adaptor.delivery.replay import reconvert as reconvert_records
    from adaptor.store import Status

    if not message_ids and not dead_letters and not rejected:
        raise click.UsageError("name at least one MESSAGE_ID, or --dead-letters, or --rejected")
    if rejected and not reconvert:
        raise click.UsageError("rejected messages have no Bundle to redeliver: add --reconvert")
    settings = settings_or_fail()
    unknown: list[str] = []
    with existing_store() as store:  # a store that is not there is not created to find nothing in it
        record_ids: dict[str, None] = {}  # an ordered set: a record is named once however often it is asked for
        for message_id in message_ids:
            found = store.find_by_message_id(message_id)
            if not found:
                unknown.append(message_id)
            record_ids.update(dict.fromkeys(m.id for m in found))
        if dead_letters:
            record_ids.update(dict.fromkeys(store.record_ids(Status.DEAD_LETTER)))
        if rejected:
            record_ids.update(dict.fromkeys(store.record_ids(Status.REJECTED)))
        operator = f"{_os_user()} (nhs111 replay)"
        if reconvert:
            results = reconvert_records(store, settings, record_ids, operator=operator)
        else:
            results = redeliver(store, record_ids, operator=operator)

    for result in results:
        if result.requeued:
            version = f", Bundle version {result.bundle_version}" if result.bundle_version is not None else ""
            click.echo(
                f"queued  {result.message_id} (record {result.record_id}, was {result.previous.value}{version})"
            )
        else:
            click.echo(f"skipped {result.message_id} (record {result.record_id}): {_one_line(result.skipped or '')}")
    for message_id in unknown:
        click.echo(f"Error: no stored message with MessageID {message_id}", err=True)
    requeued = sum(1 for result in results if result.requeued)
    click.echo(f"{requeued} message(s) queued for delivery", err=True)
    if unknown or any(result.skipped and result.skipped.startswith(CONVERSION_FAILED) for result in results):
        sys.exit(1)


def _os_user() -> str:
    """Who runs the command, as each replay's history records it."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "unknown"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# Operator commands (issue 5) live in their own module; registered here so `nhs111 --help` lists them all.
main.add_command(samples)
main.add_command(send)

# The store and console commands (issue 5): `nhs111 messages list|show`, `nhs111 console hash-password`.
main.add_command(messages)
main.add_command(console)

# The schema commands (issue 6): `nhs111 db upgrade|current`.
from adaptor.cli.db import db  # noqa: E402

main.add_command(db)
