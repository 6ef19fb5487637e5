"""The mappings' paths of child steps, answered by ElementPath (:func:`mappings.hl7.xpath`), select exactly what
the XPath they stand for selects: on every element of every corpus document and Pathways case."""

from __future__ import annotations

import functools
import importlib
import pkgutil

import pytest
from conftest import REQUEST_SUFFIX, corpus_pairs, require_shared
from lxml import etree

import mappings
from mappings import hl7, questionnaire
from mappings.hl7 import Element


@functools.cache
def child_step_queries() -> dict[str, hl7._ChildSteps]:
    queries = {}
    for module_info in pkgutil.iter_modules(mappings.__path__):
        module = importlib.import_module(f"mappings.{module_info.name}")
        for name, value in vars(module).items():
            if isinstance(value, hl7._ChildSteps):
                queries[f"{module_info.name}.{name}"] = value
    return queries


@functools.cache
def corpus_trees() -> list[Element]:
    trees = []
    for pair in corpus_pairs():
        raw = require_shared("corpus", "reference", f"{pair}{REQUEST_SUFFIX}").read_bytes()
        for document in etree.fromstring(raw).iter(f"{{{hl7.HL7}}}ClinicalDocument"):
            trees.append(document)
            case = questionnaire.read_pathways_case(document)
            if case is not None:
                trees.append(case)
    return trees


def test_positions_are_answered_by_element_path_too() -> None:
    queries = child_step_queries()
    assert "hl7._POSTCODE" in queries  # hl7:postalCode[1]
    assert len(queries) > 60


@pytest.mark.parametrize("name", sorted(child_step_queries()))
def test_child_steps_select_what_the_xpath_selects(name: str) -> None:
    query = child_step_queries()[name]
    compiled = etree.XPath(query.expression, namespaces=hl7.NS)
    first_step = query.steps[0][0]
    contexts = 0
    for tree in corpus_trees():
        for element in tree.iter():
            if not isinstance(element.tag, str) or element.find(first_step) is None:
                continue
            contexts += 1
            expected = compiled(element)
            assert query(element) == expected, f"{query.expression} at {tree.getroottree().getpath(element)}"
            assert hl7.one(query, element) is (expected[0] if expected else None)
    assert contexts or name in UNUSED_BY_THE_CORPUS, f"{query.expression}: no corpus element to check it on"


#: Queries whose first step no corpus document has (the mapping still reads them when a sender sends them):
#: the synthetic test below checks the same kinds of path.
UNUSED_BY_THE_CORPUS = frozenset(
    {
        "composition._PARENT_DOCUMENT_ID",
        "encounter._DATA_ENTERER",
        "encounter._PART_OF_TIME",
        "hl7._COUNTY",
        "hl7._STATE",
        "hl7._SUFFIX",
        "hl7._USEABLE",
        "hl7._VALID_TIME",
        "organization._WHOLE_ORGANIZATION",
        "patient._BIRTH_PLACE_NAME",
        "patient._ETHNIC_GROUP",
        "patient._GUARDIANS",
        "patient._GUARDIAN_NAME",
        "patient._GUARDIAN_ORGANIZATION",
        "patient._MARITAL_STATUS",
        "patient._RELIGION",
    }
)

SYNTHETIC = f"""<r xmlns="{hl7.HL7}" xmlns:pw="{hl7.PATHWAYS}">
  <a><b>1</b><c/><b>2</b></a>
  <c/>
  <a><c/><b>3</b><pw:b>4</pw:b><b>5</b></a>
  <a/>
</r>"""


@pytest.mark.parametrize(
    "expression",
    [
        "hl7:a",
        "hl7:a[1]",
        "hl7:a[2]",
        "hl7:a[4]",
        "hl7:a/hl7:b",
        "hl7:a/hl7:b[1]",
        "hl7:a/hl7:b[2]",
        "hl7:a[2]/hl7:b[1]",
        "hl7:a/pw:b",
        "hl7:a/pw:b[1]",
        "hl7:c[1]",
        "hl7:a[3]/hl7:b",
    ],
)
def test_positions_count_among_the_parents_children_of_that_name(expression: str) -> None:
    root = etree.fromstring(SYNTHETIC)
    query = hl7.xpath(expression)
    assert isinstance(query, hl7._ChildSteps)
    expected = etree.XPath(expression, namespaces=hl7.NS)(root)
    assert query(root) == expected
    assert hl7.one(query, root) is (expected[0] if expected else None)
