"""Every corpus Bundle is a valid FHIR STU3 message Bundle whose references all resolve (mapping.md
sections 0, 1 and 3.21).

Validation is fhir.resources' STU3 model (via :func:`adaptor.delivery.conversion.validate_bundle`); reference resolution
and the Bundle-shell rules are checked here directly, independently of that helper.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from conftest import REQUEST_SUFFIX, corpus_pairs, require_shared

from adaptor.delivery.conversion import convert, validate_bundle

Json = dict[str, Any]
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
NOW = datetime(2022, 5, 12, 7, 25, 14, 794000, tzinfo=UTC)


@functools.cache
def _bundle(pair: str) -> Json:
    request = require_shared("corpus", "reference") / f"{pair}{REQUEST_SUFFIX}"
    assert request.exists(), f"corpus request {request} is missing"
    return convert(request.read_bytes(), now=NOW)


def _references(node: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield path, value
            else:
                yield from _references(value, f"{path}.{key}")
    elif isinstance(node, list):
        for item in node:
            yield from _references(item, path)


@pytest.mark.parametrize("pair", corpus_pairs())
def test_bundle_validates_as_fhir_stu3(pair: str) -> None:
    assert validate_bundle(_bundle(pair)) == []


@pytest.mark.parametrize("pair", corpus_pairs())
def test_every_reference_resolves_to_an_entry(pair: str) -> None:
    bundle = _bundle(pair)
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    dangling = [
        f"{path} -> {reference}"
        for entry in bundle["entry"]
        for path, reference in _references(entry["resource"], entry["resource"]["resourceType"])
        if reference not in full_urls
    ]
    assert dangling == []


@pytest.mark.parametrize("pair", corpus_pairs())
def test_bundle_shell_and_ids(pair: str) -> None:
    bundle = _bundle(pair)
    assert set(bundle) == {"resourceType", "meta", "identifier", "type", "entry"}  # never Bundle.id
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "message"
    assert bundle["meta"] == {"lastUpdated": "2022-05-12T07:25:14.794+00:00"}
    assert bundle["identifier"]["type"] == {"text": "ClinicalDocument VersionNumber"}
    assert bundle["identifier"]["value"].isdigit()
    header, *others = (entry["resource"] for entry in bundle["entry"])
    assert header["resourceType"] == "MessageHeader"
    ids = [header["id"]] + [resource["id"] for resource in others]
    assert len(ids) == len(set(ids)), "every resource appears exactly once"
    for entry in bundle["entry"]:
        assert set(entry) == {"fullUrl", "resource"}
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        assert not {"meta", "implicitRules", "contained"} & set(entry["resource"])
    assert all(UUID4.match(resource["id"]) for resource in others), "new resources get lower-case UUID v4 ids"
