"""Synthetic NHS 111 ITK requests: the sample catalogue and the one builder of synthetic messages.

* :mod:`.scenarios` describes each scenario declaratively (:mod:`.model`), a module each: patient, callers,
  recipients, triage, dispositions, advice; :mod:`.catalogue` lists them in the order of the index.
* :mod:`.cda` (with :mod:`.hl7`), :mod:`.pathways` and :mod:`.envelope` write a scenario on the wire: CDA
  documents valid against ``POCD_MT000002UK01.xsd``, a Pathways case valid against ``pathwaysCase_v2.4.xsd``
  and the SOAP / ITK Distribution Envelope around them. The test factory (``tests/itk_factory.py``) uses the
  same writers.
* :mod:`.nullification` writes a nullification (:data:`NULLIFICATIONS`): the sender withdrawing the document of
  the scenario it is paired with.
* This module builds a scenario with fresh ids and dates (:func:`build_sample`), a scenario with its nullification
  (:func:`build_pair`), and writes the whole catalogue, with an index, into a folder (:func:`generate`): that is
  ``nhs111 samples --out DIR``.

Structure is deterministic (the same scenario always has the same elements); ids are new UUIDs and every time
is relative to the generation time, so each generation produces new, current messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from adaptor.itk.wire import ODS_ADDRESS_PREFIX, ODS_IDENTITY_PREFIX
from adaptor.samples import cda
from adaptor.samples.catalogue import NULLIFICATIONS, SCENARIOS
from adaptor.samples.envelope import (
    TIMESTAMP_TTL,
    build_envelope,
    dos_address,
    ods_address,
)
from adaptor.samples.model import Nullification, Scenario
from adaptor.samples.nullification import build_nullification

__all__ = [
    "NULLIFICATIONS",
    "SCENARIOS",
    "INDEX_FILE",
    "Nullification",
    "Scenario",
    "addressed_codes",
    "build_pair",
    "build_sample",
    "build_scenario",
    "generate",
    "index_markdown",
    "scenario",
]

INDEX_FILE = "README.md"


def scenario(name: str) -> Scenario:
    """The catalogue scenario called ``name`` (its file name without ``.xml``). Raises ``KeyError``."""
    for candidate in SCENARIOS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def _addresses(scenario: Scenario) -> list[tuple[str, str | None]]:
    return [ods_address(value) if kind == "ods" else dos_address(value) for kind, value in scenario.addresses]


def build_scenario(scenario: Scenario, *, now: datetime | None = None) -> etree._Element:
    """The SOAP request (root element) for ``scenario``: new ids, times relative to ``now`` (default: now)."""
    now = now or datetime.now(UTC)
    documents = [cda.report_document(report, now) for report in scenario.reports]
    sender = scenario.sender.ods
    return build_envelope(
        documents,
        action=scenario.service,
        timestamp=(now, now + TIMESTAMP_TTL),
        username=scenario.username or None,
        addresses=_addresses(scenario),
        audit_ids=[f"{ODS_IDENTITY_PREFIX}{sender}"],
        sender_address=f"{ODS_ADDRESS_PREFIX}{sender}",
        interaction=scenario.interaction,
        profile_id=scenario.profile_id,
    )


def build_sample(scenario: Scenario, *, now: datetime | None = None) -> bytes:
    """:func:`build_scenario` as UTF-8 bytes, pretty-printed so that the file reads well."""
    return _file_bytes(build_scenario(scenario, now=now))


def build_pair(item: Nullification, *, now: datetime | None = None) -> tuple[bytes, bytes]:
    """A fresh request of the scenario ``item`` withdraws, and ``item``'s nullification of it, as files."""
    now = now or datetime.now(UTC)
    withdrawn = scenario(item.withdraws)
    request = build_scenario(withdrawn, now=now)
    nullification = build_nullification(item, withdrawn, request, now=now)
    return _file_bytes(request), _file_bytes(nullification)


def _file_bytes(root: etree._Element) -> bytes:
    """A request as a sample file: pretty-printed so that it reads well, UTF-8."""
    etree.indent(root, space="  ")
    # The declaration as live senders write it (lxml's own uses single quotes).
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(root, encoding="UTF-8") + b"\n"


@dataclass(frozen=True)
class AddressedCodes:
    """Every ODS code and DoS id the samples are addressed to: the allow-list that accepts them all."""

    ods_codes: tuple[str, ...]
    dos_ids: tuple[str, ...]


def addressed_codes(scenarios: Iterable[Scenario] = SCENARIOS) -> AddressedCodes:
    ods: list[str] = []
    dos: list[str] = []
    for item in scenarios:
        for kind, value in item.addresses:
            target = ods if kind == "ods" else dos
            if value not in target:
                target.append(value)
    return AddressedCodes(tuple(sorted(ods)), tuple(sorted(dos)))


def _short(interaction: str) -> str:
    return interaction.rsplit(":", 1)[-1]


def index_markdown(scenarios: Iterable[Scenario] = SCENARIOS) -> str:
    """The folder's README: what each sample is, the interaction it uses and what it exercises.

    It contains no ids or dates, so regenerating the folder leaves it unchanged while the catalogue does.
    """
    scenarios = list(scenarios)
    codes = addressed_codes(scenarios)
    lines = [
        "# Synthetic NHS 111 ITK requests",
        "",
        "Generated by `nhs111 samples --out samples/` from the catalogue in `adaptor/samples/catalogue.py`;",
        "do not edit by hand. Every patient, organisation and telephone number is invented: NHS numbers come",
        "from the test range 999 000 0000 - 999 999 9999, ODS codes start with `X`, telephone numbers are",
        "Ofcom drama numbers. Each generation writes new MessageIDs, trackingids, document ids and current",
        "dates. Send them to a running adaptor with `nhs111 send samples/ --url URL` (add `--fresh-ids` to",
        "send the same files again as new messages).",
        "",
        "| Scenario | File | Interaction | What it exercises |",
        "|---|---|---|---|",
    ]
    for item in scenarios:
        documents = f" ({len(item.reports)} documents)" if len(item.reports) > 1 else ""
        lines.append(
            f"| {item.summary}{documents} | [`{item.file_name}`]({item.file_name}) | "
            f"`{_short(item.interaction)}` | {item.exercises} |"
        )
    lines += [
        "",
        "A nullification withdraws the document of the sample it names, sent in error (see \"Nullification\" in the",
        "project's README): each generation writes it against the document of that sample's file, so send that file",
        "first (`nhs111 send` sends a folder in name order, which does).",
        "",
        "| Nullification | File | Interaction | Withdraws | What it exercises |",
        "|---|---|---|---|---|",
    ]
    for withdrawal in NULLIFICATIONS:
        withdrawn = scenario(withdrawal.withdraws)
        lines.append(
            f"| {withdrawal.summary} | [`{withdrawal.file_name}`]({withdrawal.file_name}) | "
            f"`{_short(withdrawal.interaction)}` | [`{withdrawn.file_name}`]({withdrawn.file_name}) | "
            f"{withdrawal.exercises} |"
        )
    lines += [
        "",
        "The samples are addressed to these ODS codes and DoS ids; an adaptor with an allow-list accepts",
        "them when either list contains them:",
        "",
        "```",
        f"PEM111_ITK_ODS_CODE_LIST={','.join(codes.ods_codes)}",
        f"PEM111_ITK_DOS_ID_LIST={','.join(codes.dos_ids)}",
        "```",
        "",
    ]
    return "\n".join(lines)


def generate(folder: Path, *, now: datetime | None = None, scenarios: Iterable[Scenario] = SCENARIOS) -> list[Path]:
    """Write one ``<name>.xml`` per scenario, one per nullification of a scenario among them (withdrawing the
    document of that scenario's file) and the ``README.md`` index into ``folder`` (created if needed).

    Returns the files written, index last. Files of the folder that are not in the catalogue are left alone.
    """
    now = now or datetime.now(UTC)
    scenarios = list(scenarios)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    requests: dict[str, etree._Element] = {}
    for item in scenarios:
        path = folder / item.file_name
        requests[item.name] = build_scenario(item, now=now)
        path.write_bytes(_file_bytes(requests[item.name]))
        written.append(path)
    for withdrawal in NULLIFICATIONS:
        if withdrawal.withdraws not in requests:
            continue
        path = folder / withdrawal.file_name
        root = build_nullification(withdrawal, scenario(withdrawal.withdraws), requests[withdrawal.withdraws], now=now)
        path.write_bytes(_file_bytes(root))
        written.append(path)
    index = folder / INDEX_FILE
    index.write_text(index_markdown(scenarios), encoding="utf-8")
    written.append(index)
    return written
