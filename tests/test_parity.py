"""Parity with the reference adaptor, judged the way the project is judged (mapping.md section 7).

Every request/Bundle pair of the shared corpus is converted in-process and compared, fact by fact, with
``../shared/tools/parity.py`` (its ``compare`` and ``known_differences``, loaded from its path, never copied).
Recall and precision must both reach 0.99 for every pair, so a regression in any resource fails ``make test``.
Pairs added to the corpus later (look-alike documents) are picked up automatically.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from conftest import SHARED, require_shared

from adaptor.config import Settings
from adaptor.convert import convert

TARGET = 0.99
REQUEST_SUFFIX = "-itk-request.xml"
RESULT_SUFFIX = "-fhir-result.json"

#: The pairs mapping.md section 7 names: always collected, so that a missing corpus fails rather than
#: collecting nothing.
NAMED_PAIRS = (
    "primary-emergency",
    "repeat-caller",
    "adastra-itk-ooh-referral-dx06",
    "cleric-itk-ooh-referral-dx09",
    "conformance-example-adastra-ooh",
    "conformance-example-adastra-original",
    "ic24-itk-ooh-referral-dx06",
    "tpp-ooh-T6-skillset",
    "encompassing-encounter-effective-time-high-value-null",
)


def _corpus_folder() -> Path:
    return SHARED / "corpus" / "reference"


def _all_pairs() -> list[str]:
    """The named pairs plus any other request/result pair found in the corpus folder."""
    found = {
        request.name.removesuffix(REQUEST_SUFFIX)
        for request in _corpus_folder().glob(f"*{REQUEST_SUFFIX}")
        if (_corpus_folder() / request.name.replace(REQUEST_SUFFIX, RESULT_SUFFIX)).exists()
    }
    return sorted(set(NAMED_PAIRS) | found)


@functools.cache
def parity_tool() -> ModuleType:
    path = require_shared("tools", "parity.py")
    spec = importlib.util.spec_from_file_location("shared_parity", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _describe(facts: Counter[tuple[str, str, str]], limit: int = 8) -> str:
    lines = [f"    {count}x {path} = {value[:90]}" for (_, path, value), count in facts.most_common(limit)]
    return "\n".join(lines) or "    (none)"


@pytest.mark.parametrize("pair", _all_pairs())
def test_recall_and_precision_reach_the_target(pair: str) -> None:
    folder = require_shared("corpus", "reference")
    request, expected = folder / f"{pair}{REQUEST_SUFFIX}", folder / f"{pair}{RESULT_SUFFIX}"
    assert request.exists() and expected.exists(), f"corpus pair {pair} is missing from {folder}"
    tool = parity_tool()

    ours = convert(request.read_bytes(), config=Settings(), now=datetime(2022, 5, 12, 7, 25, 14, tzinfo=UTC))
    result = tool.compare(ours, json.loads(expected.read_text()), tool.known_differences(str(folder)), pair)

    report = (
        f"{pair}: recall {result['recall']:.4f}, precision {result['precision']:.4f}\n"
        f"  missing (expected, not produced):\n{_describe(result['missing'])}\n"
        f"  extra (produced, not expected):\n{_describe(result['extra'])}"
    )
    assert result["recall"] >= TARGET, report
    assert result["precision"] >= TARGET, report


def test_the_corpus_has_every_named_pair() -> None:
    folder = require_shared("corpus", "reference")
    missing = [name for name in NAMED_PAIRS if not (folder / f"{name}{REQUEST_SUFFIX}").exists()]
    assert not missing, f"named corpus pairs missing from {folder}: {missing}"
