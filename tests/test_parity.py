"""Parity with the reference adaptor, judged the way the project is judged (mapping.md section 7).

Every request/Bundle pair of the shared corpus is converted in-process and compared, fact by fact, with
``../shared/tools/parity.py`` (its ``compare`` and ``known_differences``, loaded from its path, never copied).
Recall and precision must both reach 0.99 for every pair, so a regression in any resource fails ``make test``.
Pairs added to the corpus later (look-alike documents) are picked up automatically.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime

import pytest
from conftest import CORPUS_PAIRS, REQUEST_SUFFIX, RESULT_SUFFIX, corpus_pairs, parity_tool, require_shared

from adaptor.config import Settings
from adaptor.delivery.conversion import convert

TARGET = 0.99


def _describe(facts: Counter[tuple[str, str, str]], limit: int = 8) -> str:
    lines = [f"    {count}x {path} = {value[:90]}" for (_, path, value), count in facts.most_common(limit)]
    return "\n".join(lines) or "    (none)"


@pytest.mark.parametrize("pair", corpus_pairs())
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
    missing = [name for name in CORPUS_PAIRS if not (folder / f"{name}{REQUEST_SUFFIX}").exists()]
    assert not missing, f"named corpus pairs missing from {folder}: {missing}"
