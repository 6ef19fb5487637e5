"""The `nhs111` command line: every command, and the ITK client `nhs111 send` uses."""

from adaptor.cli.commands import main

__all__ = ["main"]
