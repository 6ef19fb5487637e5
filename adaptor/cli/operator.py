"""Operator commands: ``nhs111 samples`` (write the synthetic sample requests) and ``nhs111 send`` (post
requests to an ITK endpoint and report each answer).

Both are standalone :class:`click.Command` objects; :mod:`adaptor.cli` adds them to the ``nhs111`` group.
Before that, or without installing the script, run them as ``python -m adaptor.cli.operator samples|send ...``.
"""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

import click

from adaptor.cli.sender import DEFAULT_TIMEOUT_SECONDS, ItkSender, SendError, SendResult, build_session, request_files
from adaptor.cli.support import OneLineErrors


@click.command("samples")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("samples"),
    show_default=True,
    help="Folder to write the samples and their README.md index into (created if needed).",
)
def samples(out: Path) -> None:
    """Write one synthetic ITK request per scenario of the sample catalogue, with fresh ids and dates, and the
    nullifications that withdraw some of them.

    Every patient and organisation is invented (NHS numbers from the 999 test range). Running it again
    regenerates the folder: same scenarios and files, new MessageIDs, trackingids and times.
    """
    from adaptor.samples import NULLIFICATIONS, SCENARIOS, generate

    try:
        written = generate(out)
    except OSError as exc:
        click.echo(f"Error: cannot write to {out}: {exc.strerror or exc}", err=True)
        sys.exit(2)
    for path in written:
        click.echo(str(path))
    catalogue = {s.file_name for s in SCENARIOS} | {n.file_name for n in NULLIFICATIONS}
    for stray in sorted(p for p in out.glob("*.xml") if p.name not in catalogue):
        click.echo(f"warning: {stray} is not in the catalogue (left as it is)", err=True)
    click.echo(f"{len(written) - 1} samples written to {out} (index: {written[-1].name})", err=True)


def endpoint_url(_ctx: click.Context | None, _param: click.Parameter | None, value: str) -> str:
    """``--url``: an absolute http or https URL with a host (and a port, if any, in range)."""
    try:
        parts = urllib.parse.urlsplit(value.strip())
        usable = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (read for its check: a port out of range or not a number raises ValueError)
    except ValueError:
        usable = False
    if not usable:
        raise click.BadParameter(f"{value!r} is not an http(s) URL such as http://127.0.0.1:8080/report")
    return value.strip()


@click.command("send")
@click.argument("paths", nargs=-1, required=True, metavar="FILE|DIR...", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--url", required=True, callback=endpoint_url, help="The ITK endpoint, e.g. http://127.0.0.1:8080/report."
)
@click.option("--cert", type=click.Path(exists=True, dir_okay=False), help="Client certificate (PEM) for mutual TLS.")
@click.option(
    "--key", type=click.Path(exists=True, dir_okay=False), help="Private key of --cert, if not in the same file."
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle (PEM) that signed the server's certificate (default: the system's).",
)
@click.option(
    "--fresh-ids",
    is_flag=True,
    help="Stamp a new MessageID, trackingid and WS-Security Timestamp into each request before sending, so that "
    "files already sent are accepted as new messages.",
)
@click.option(
    "--wrap",
    is_flag=True,
    help="Send a file that is a bare DistributionEnvelope (as in the IUC specification's examples) inside a SOAP "
    "envelope with fresh WS-Addressing headers (new MessageID, Action from its service, To = --url) and a "
    "Timestamp; SOAP requests are sent as they are.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=DEFAULT_TIMEOUT_SECONDS,
    show_default=True,
    help="Seconds to wait for each answer.",
)
@click.option("--wsdl", metavar="FILE|URL", help="Use this WSDL instead of the one served at <url>?wsdl.")
def send(
    paths: tuple[Path, ...],
    url: str,
    cert: str | None,
    key: str | None,
    ca: str | None,
    fresh_ids: bool,
    wrap: bool,
    timeout: float,
    wsdl: str | None,
) -> None:
    """Send each ITK request (SOAP file, or every *.xml in a folder; with --wrap also bare DistributionEnvelopes)
    to URL, one line per message.

    Prints OK with the MessageID, or FAULT with the fault code, ITK ErrorCode and ErrorText, or ERROR when no
    answer came. Exit status 0 when every message was accepted, 1 otherwise, 2 for a usage error.
    """
    files = request_files(paths)
    if not files:
        raise click.UsageError(f"no *.xml request files in {', '.join(map(str, paths))}")
    try:
        sender = ItkSender(url, session=build_session(cert, key, ca), timeout=timeout, wsdl=wsdl)
    except SendError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if sender.wsdl_warning:
        click.echo(f"warning: {sender.wsdl_warning}", err=True)

    results: list[SendResult] = []
    if any(path.is_dir() for path in paths):
        stderr = sys.stderr
        with click.progressbar(files, label="Sending", file=stderr, show_pos=True, show_eta=False) as bar:
            for path in bar:
                result = sender.send_file(path, fresh_ids=fresh_ids, wrap=wrap)
                if stderr.isatty():  # the bar is drawn: clear its line so that the result line stands alone
                    stderr.write("\r\033[K")
                    stderr.flush()
                click.echo(result.line())
                results.append(result)
    else:
        for path in files:
            result = sender.send_file(path, fresh_ids=fresh_ids, wrap=wrap)
            click.echo(result.line())
            results.append(result)

    accepted = sum(result.ok for result in results)
    refused = sum(result.outcome == "FAULT" for result in results)
    failed = len(results) - accepted - refused
    click.echo(f"{len(results)} sent: {accepted} OK, {refused} refused, {failed} failed", err=True)
    sys.exit(0 if accepted == len(results) else 1)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def _operator() -> None:
    """The operator commands, runnable without the ``nhs111`` script."""


_operator.add_command(samples)
_operator.add_command(send)

if __name__ == "__main__":
    _operator(prog_name="python -m adaptor.cli.operator")
