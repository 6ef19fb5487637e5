"""The `nhs111` command line: every command (:mod:`adaptor.cli.commands` is its entry point), and the ITK client
`nhs111 send` uses.

This package module imports nothing, so that ``python -m adaptor.cli.<module>`` loads each module once.
"""
