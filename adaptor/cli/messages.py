"""Operator commands over the message store: ``nhs111 messages list|show`` and ``nhs111 console hash-password``.

``messages`` reads the store named by ``PEM111_DATABASE_URL`` / ``PEM111_DATA_DIR``, the same one the servers
and workers use; it never changes anything (``nhs111 replay`` does that), and a store that is not there is
refused, naming where it was looked for, rather than created empty. Errors are one line with exit status 2,
never a traceback. Text from requests and targets (MessageIDs, trackingids, error texts) is printed with its
control characters escaped (:func:`adaptor.ops.logs.escape_control`): one row or field per line, and nothing that
drives the terminal.

Both groups are standalone :class:`click.Group` objects; :mod:`adaptor.cli` adds them to the ``nhs111`` group.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from adaptor.cli.support import OneLineErrors, existing_store, fail
from adaptor.itk.wire import as_utc, interaction_name
from adaptor.ops.logs import escape_control
from adaptor.store import (
    BundleVersion,
    DeliveryAttempt,
    MessageQuery,
    MessageStore,
    OperatorAction,
    Status,
    StoredMessage,
    StoredNullification,
    versions_not_kept,
)

_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
#: The shortest record id prefix ``messages show`` looks up.
MIN_RECORD_PREFIX = 4
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None, *, option: str = "--since") -> datetime:
    """``--since`` (or ``--until``): an age (``30m``, ``2h``, ``7d``, ``1w``) or an ISO 8601 date or time
    (``2024-05-01``, ``2024-05-01T09:30``, with an offset or ``Z``; without one it is UTC). Raises
    ``ValueError``."""
    text = text.strip()
    age = _DURATION.match(text.lower())
    if age:
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[age.group(2)]: int(age.group(1))})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{option} {text!r}: give an age such as 30m, 2h, 7d or a date/time such as 2024-05-01T09:30Z"
        ) from None
    return as_utc(moment)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("messages", context_settings={"help_option_names": ["-h", "--help"]})
def messages() -> None:
    """Look at stored messages: their state, delivery attempts and errors (read-only)."""


#: The columns of ``nhs111 messages list``, in order (its header row).
LIST_COLUMNS = (
    "received",
    "state",
    "attempts",
    "MessageID",
    "trackingid",
    "interaction",
    "record id",
    "NHS number",
    "patient",
    "disposition",
)


@messages.command("list")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    metavar="STATE",
    help=f"Only messages in this state (repeatable): {', '.join(s.value for s in Status)}.",
)
@click.option("--since", metavar="WHEN", help="Only messages received since: an age (30m, 2h, 7d) or an ISO date/time.")
@click.option("--until", metavar="WHEN", help="Only messages received before: an age or an ISO date/time.")
@click.option("--tracking-id", metavar="ID", help="Only messages with this trackingid.")
@click.option("--search", metavar="TEXT", help="As the console's search box: an NHS number, or the beginning of a "
              "MessageID, trackingid or record id, or an ODS code.")  # fmt: skip
@click.option("--nhs-number", metavar="NUMBER", help="The patient's NHS number (spaces allowed).")
@click.option("--name", metavar="NAME", help="The beginning of the patient's family or given name, any case.")
@click.option("--born", metavar="YYYY-MM-DD", help="The patient's date of birth.")
@click.option("--postcode", metavar="CODE", help="The patient's postcode, or its beginning.")
@click.option("--sender", metavar="ODS", help="The sender's ODS code.")
@click.option("--recipient", metavar="CODE", help="A recipient's ODS code or DoS id.")
@click.option("--interaction", metavar="ID", help="The interaction, with or without urn:nhs-itk:interaction:.")
@click.option("--disposition", metavar="DX", help="The disposition: a Dx code (Dx05) or words of its text.")
@click.option("--warnings", "with_warnings", is_flag=True, help="Only messages converted with warnings.")
@click.option("--record", "record_prefix", metavar="PREFIX", help="The record id, or its beginning.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most this many.")
def list_messages(statuses: tuple[str, ...], since: str | None, until: str | None, limit: int, **filters: Any) -> None:
    """One line per stored message, newest first, after a header row: received time, state, attempts, MessageID,
    trackingid, interaction, record id, NHS number, patient and disposition (tab-separated, so that the output
    can be cut and sorted). The filters are the console's search; each narrows the list. A message its sender
    withdrew whose withdrawal is still on its way shows its delivery state followed by ``(withdrawal)``."""
    known = {s.value: s for s in Status}
    wanted: list[Status] = []
    for value in statuses:
        status = known.get(value.strip().lower().replace("-", "_"))
        if status is None:
            fail(f"--status {value!r}: not a state; use one of {', '.join(known)}")
        wanted.append(status)
    try:
        since_time = parse_since(since) if since is not None else None
        until_time = parse_since(until, option="--until") if until is not None else None
    except ValueError as exc:
        fail(str(exc))
    born = filters.pop("born")
    if born is not None and not _DATE.match(born.strip()):
        fail(f"--born {born!r}: give a date as YYYY-MM-DD")
    where = MessageQuery(statuses=tuple(wanted), since=since_time, until=until_time, birth_date=born, **filters)
    with existing_store() as store:
        rows = store.list_messages(where=where, limit=limit)
        total = store.count_messages(where)
    click.echo("\t".join(LIST_COLUMNS))
    for row in rows:
        index = row.index
        cells = [
            _when(row.received_at),
            _state(row),
            str(row.attempts),
            row.message_id,
            row.tracking_id,
            interaction_name(row.interaction),
            row.id,
            (index.nhs_number if index else None) or "-",
            (index.patient_name if index else None) or "-",
            (index.disposition_code if index else None) or "-",
        ]
        click.echo("\t".join(map(escape_control, cells)))
    shown = f"{len(rows)} of {total}" if total > len(rows) else str(total)
    click.echo(f"{shown} message(s)", err=True)


@messages.command("show")
@click.argument("key", metavar="ID")
@click.option("--bundle", "what", flag_value="bundle", help="Print only the FHIR Bundle (JSON) it delivers.")
@click.option(
    "--bundle-version",
    type=click.IntRange(min=1),
    metavar="N",
    help="Print only version N of its Bundle, the current one or one a reconversion replaced, exactly as stored "
    "and delivered (byte for byte).",
)
@click.option("--raw", "what", flag_value="raw", help="Print only the request exactly as received.")
def show(key: str, what: str | None, bundle_version: int | None) -> None:
    """Show a stored message: ID is its MessageID, its record id or the beginning of its record id (at least
    4 characters, naming one message). The envelope facts, the patient, the delivery state, the
    versions of its Bundle, every delivery attempt (with the Bundle version it sent) and the errors; or with
    --bundle / --bundle-version N / --raw the Bundle, one version of it, or the request itself.

    A MessageID reused by several messages shows each of them; --bundle, --bundle-version and --raw need one, by
    record id.
    """
    if bundle_version is not None:
        if what == "raw":
            fail("--raw and --bundle-version print different things: give one of them")
        what = "version"
    with existing_store() as store:
        record = store.get(key)
        found = [record] if record is not None else store.find_by_message_id(key)
        if not found and len(key.strip()) >= MIN_RECORD_PREFIX:
            found = _by_record_prefix(store, key)
        if not found:
            fail(f"no stored message with MessageID or record id {key}")
        if what is not None:
            if len(found) > 1:
                ids = ", ".join(m.id for m in found)
                fail(f"MessageID {key} names {len(found)} stored messages ({ids}): give one record id")
            if what == "version":
                _print_version(found[0], store.bundle_versions(found[0].id), bundle_version or 0)
            else:
                _print_content(found[0], what)
            return
        histories = {m.id: store.delivery_history(m.id) for m in found}
        actions = {m.id: store.operator_actions(m.id) for m in found}
        versions = {m.id: store.bundle_versions(m.id) for m in found}
        nullifications = {m.id: store.nullification(m.id) for m in found}
        withdrawn = {m.id: store.withdrawn_by(n) for m in found if (n := nullifications[m.id]) is not None}
    if len(found) > 1:
        click.echo(f"MessageID {escape_control(key)} names {len(found)} stored messages, oldest first.\n")
    for index, message in enumerate(found):
        if index:
            click.echo()
        _print_details(message, histories[message.id], versions[message.id])
        nullification = nullifications[message.id]
        if nullification is not None:
            _print_nullification(message, nullification, withdrawn[message.id])
        _print_actions(actions[message.id])


def _state(message: StoredMessage) -> str:
    """The state, marked when it is the delivery of the message's withdrawal."""
    if message.nullified is not None and message.status is not Status.NULLIFIED:
        return f"{message.status.value} (withdrawal)"
    return message.status.value


def _by_record_prefix(store: MessageStore, prefix: str) -> list[StoredMessage]:
    """The one message whose record id begins with ``prefix`` (read in full), none, or a one-line failure when
    the prefix names several."""
    listed = store.list_messages(where=MessageQuery(record_prefix=prefix), limit=5)
    if len(listed) > 1:
        ids = ", ".join(m.id for m in listed[:4]) + (", ..." if len(listed) > 4 else "")
        fail(f"record id prefix {prefix} names several stored messages ({ids}): give more of it")
    full = store.get(listed[0].id) if listed else None
    return [full] if full is not None else []


def _print_actions(actions: list[OperatorAction]) -> None:
    click.echo(f"Operator actions ({len(actions)}):")
    for action in actions:
        line = f"  {_when(action.at)}  {action.action:<10} by {action.operator}  ({action.detail})"
        click.echo(escape_control(line))


def _print_content(message: StoredMessage, what: str) -> None:
    if what == "raw":
        sys.stdout.buffer.write(message.raw or b"")
        sys.stdout.buffer.flush()
        return
    if message.bundle is None and message.status in (Status.NULLIFICATION, Status.UNMATCHED):
        fail(f"record {message.id} is a nullification: it has no Bundle of its own (`nhs111 messages show ID`)")
    if message.bundle is None:
        fail(
            f"record {message.id} has no Bundle ({message.status.value}); "
            "`nhs111 messages show --raw ID | nhs111 convert -` shows what it converts to now"
        )
    try:
        click.echo(json.dumps(json.loads(message.bundle), indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(message.bundle)


def _print_version(message: StoredMessage, versions: list[BundleVersion], number: int) -> None:
    """Version ``number`` of the Bundle as stored: the bytes its attempts sent, without a newline added."""
    chosen = next((v for v in versions if v.version == number), None)
    if chosen is None:
        kept = ", ".join(str(v.version) for v in versions)
        having = f"it has {'version' if len(versions) == 1 else 'versions'} {kept}" if kept else "it has no Bundle"
        fail(f"record {message.id} has no Bundle version {number} ({having})")
    sys.stdout.buffer.write(chosen.bundle.encode("utf-8"))
    sys.stdout.buffer.flush()


def _print_details(message: StoredMessage, history: list[DeliveryAttempt], versions: list[BundleVersion]) -> None:
    fields = [
        ("Record", message.id),
        ("MessageID", message.message_id),
        ("trackingid", message.tracking_id),
        ("Service", message.service),
        ("Interaction", message.interaction),
        ("Sender", message.sender),
        ("ODS addresses", ", ".join(message.ods_codes) or "-"),
        ("DoS addresses", ", ".join(message.dos_ids) or "-"),
        ("Received", _when(message.received_at)),
        *_patient_fields(message),
        ("State", message.status.value),
        ("Attempts", str(message.attempts)),
    ]
    if message.status is Status.RETRYING:
        fields.append(("Next attempt", _when(message.next_attempt_at)))
    if message.delivered_at is not None:
        fields.append(("Delivered", _when(message.delivered_at)))
    if message.replays:
        fields.append(("Replays", str(message.replays)))
    if message.status_reason:
        fields.append(("Last error", message.status_reason))
    if message.nullified is not None:
        by = message.nullified.nullification
        fields += [
            ("Withdrawn", f"{_when(by.effective_at)} by its sender: {by.reason}" + _code(by)),
            ("Withdrawn by", by.author or "-"),
            ("Nullification", f"MessageID {by.message_id}, record {by.record_id}"),
            ("Withdrawal", _withdrawal(message)),
        ]
    if message.bundle_version is not None:
        converted = f", converted {_when(message.converted_at)}" if message.converted_at is not None else ""
        fields.append(("Bundle", f"version {message.bundle_version}{converted}"))
    else:
        fields.append(("Bundle", "none"))
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        click.echo(f"{name + ':':<{width + 1}} {escape_control(value)}")
    _print_versions(versions)
    click.echo(f"Delivery attempts ({len(history)}):")
    for attempt in history:
        outcome = attempt.outcome.value if attempt.outcome is not None else "in progress"
        version = f"Bundle v{attempt.bundle_version}" if attempt.bundle_version is not None else "no Bundle"
        line = f"  {_when(attempt.started_at)}  {outcome:<17} {version:<10} {attempt.target}  ({attempt.owner})"
        click.echo(escape_control(line))
        if attempt.error:
            click.echo(f"    error: {escape_control(attempt.error)}")


def _code(nullification: StoredNullification) -> str:
    return f" (code {nullification.reason_code})" if nullification.reason_code else ""


def _withdrawal(message: StoredMessage) -> str:
    assert message.nullified is not None
    version = message.nullified.withdrawal_version
    if version is None:
        return "none: nothing of it had been delivered, and nothing ever is"
    if message.status is Status.NULLIFIED:
        return f"Bundle version {version}, delivered {_when(message.delivered_at)}"
    return f"Bundle version {version}, {message.status.value}"


def _print_nullification(
    message: StoredMessage, nullification: StoredNullification, withdrawn: list[StoredMessage]
) -> None:
    """What a nullification withdraws and what became of each stored message it names."""
    withdraws = nullification.withdraws_id or "-"
    if nullification.withdraws_set_id:
        withdraws += f" (setId {nullification.withdraws_set_id}, version {nullification.withdraws_version})"
    click.echo(f"Withdraws: {escape_control(withdraws)}")
    click.echo(f"  reason: {escape_control(nullification.reason + _code(nullification))}")
    click.echo(f"  by: {escape_control(nullification.author or '-')}, at {_when(nullification.effective_at)}")
    if not withdrawn:
        click.echo("  no stored message is that document: unmatched (one arriving later is never delivered)")
    for original in withdrawn:
        by = original.nullified.nullification if original.nullified is not None else None
        note = "" if by is None or by.record_id == message.id else f", withdrawn before by record {by.record_id}"
        line = f"  {original.message_id}  record {original.id}  {_state(original)}{note}"
        click.echo(escape_control(line))
def _patient_fields(message: StoredMessage) -> list[tuple[str, str]]:
    """What the search index holds of the patient and the referral, as ``show`` prints it."""
    index = message.index
    if index is None or not index.complete:
        return [("Patient", "not indexed yet (`nhs111 db reindex`)")]
    fields = [
        ("Patient", index.patient_name or "-"),
        ("NHS number", index.nhs_number or "-"),
        ("Born", index.birth_date or "-"),
        ("Disposition", " ".join(filter(None, (index.disposition_code, index.disposition))) or "-"),
        ("Service", index.receiving_service or "-"),
    ]
    fields += [("Warning", warning) for warning in index.warnings]
    return fields


def _print_versions(versions: list[BundleVersion]) -> None:
    """The Bundle's versions, oldest first; those replaced before superseded versions were kept are named."""
    if not versions:
        return
    click.echo(f"Bundle versions ({len(versions)}; --bundle-version N prints one as delivered):")
    lost = versions_not_kept(versions)
    if lost:
        numbers = ", ".join(f"v{n}" for n in lost)
        click.echo(f"  {numbers}: not kept (replaced before the adaptor kept superseded versions)")
    for v in versions:
        superseded = "current" if v.superseded_at is None else f"superseded {_when(v.superseded_at)}"
        click.echo(f"  v{v.version:<3} converted {_when(v.converted_at)}  {superseded:<31}  {v.size} bytes")


@click.group("console", context_settings={"help_option_names": ["-h", "--help"]})
def console() -> None:
    """The web console at /console (see PEM111_CONSOLE_USERS and PEM111_CONSOLE_TOKEN)."""


@console.command("hash-password")
@click.option("--user", metavar="NAME", help="Print NAME:<hash>, an entry ready for PEM111_CONSOLE_USERS.")
def hash_password(user: str | None) -> None:
    """Ask for a password (twice) and print its hash for PEM111_CONSOLE_USERS (user:<hash>,user:<hash>).

    The password is read from the terminal without echo; piped in, the first line of standard input is used
    (twice for the confirmation). The hash is salted: the same password gives a different hash each time.
    """
    from werkzeug.security import generate_password_hash

    if user is not None and (not user.strip() or any(c in user for c in ":,") or user != user.strip()):
        fail("--user: a user name cannot be empty, contain ':' or ',' or start or end with a space")
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        fail("the password must be at least 8 characters long")
    password_hash = generate_password_hash(password)
    click.echo(f"{user}:{password_hash}" if user else password_hash)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def _standalone() -> None:
    """The message and console commands, runnable without the ``nhs111`` script."""


_standalone.add_command(messages)
_standalone.add_command(console)

if __name__ == "__main__":
    _standalone(prog_name="python -m adaptor.cli.messages")
