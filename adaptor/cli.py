"""The ``nhs111`` command line: serve the endpoint, convert a message, and the operator commands.

Flags override the ``PEM111_*`` environment (see :mod:`adaptor.config`). Errors are one line naming the problem,
with exit status 2; never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .config import ConfigError, Settings


def _settings(**overrides: object) -> Settings:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nhs111-adaptor")
def main() -> None:
    """NHS 111 ITK receiver adaptor."""


@main.command()
@click.option("--host", help="Interface to listen on (PEM111_HOST, default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (PEM111_PORT, default 8080).")
def serve(host: str | None, port: int | None) -> None:
    """Serve the ITK endpoint, the WSDL and the health check."""
    from .server import serve as run_server

    run_server(_settings(host=host, port=port))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path, allow_dash=True))
@click.option("--validate", is_flag=True, help="Also validate the Bundle with fhir.resources (STU3).")
def convert(file: Path, validate: bool) -> None:
    """Print the FHIR STU3 Encounter Report Bundle for FILE (SOAP request, DistributionEnvelope or
    ClinicalDocument) as JSON: exactly what is delivered."""
    from .convert import ConversionError, validate_bundle
    from .convert import convert as convert_request

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
