"""Shared test helpers: where ``../shared`` is, and the rule for tests that need it.

``../shared`` (the corpus, the published schemas, the tools) sits beside the checkout; tests read it in
place and never copy it. A test that needs it calls :func:`require_shared`: when it is missing the test is
skipped on a developer machine but FAILS when the ``CI`` environment variable is set, so CI can never pass by
skipping.

The fixtures for private brokers and databases live in their own modules, registered here as plugins so that every
test module can name them without importing them: ``brokers`` (a private RabbitMQ node), ``postgres`` (the shared
and the private PostgreSQL servers) and ``databases`` (a store on SQLite and on PostgreSQL).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest
from unavailable import unavailable

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

pytest_plugins = ["brokers", "postgres", "databases"]


def require_shared(*parts: str) -> Path:
    """``SHARED / parts`` if it exists; otherwise fail under CI, skip elsewhere."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        unavailable(f"{path} is missing (../shared must sit beside the checkout)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    """The ``../shared`` folder (see :func:`require_shared`)."""
    return require_shared()


# -- the reference corpus ----------------------------------------------------------------------------------------

REQUEST_SUFFIX = "-itk-request.xml"
RESULT_SUFFIX = "-fhir-result.json"

#: The pairs mapping.md section 7 names: always collected, so that a missing corpus fails rather than collecting
#: nothing.
CORPUS_PAIRS = (
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


def corpus_pairs() -> list[str]:
    """The named pairs plus any other request/result pair found in ``../shared/corpus/reference``."""
    folder = SHARED / "corpus" / "reference"
    found = {
        request.name.removesuffix(REQUEST_SUFFIX)
        for request in folder.glob(f"*{REQUEST_SUFFIX}")
        if (folder / request.name.replace(REQUEST_SUFFIX, RESULT_SUFFIX)).exists()
    }
    return sorted(set(CORPUS_PAIRS) | found)


def load_module(path: Path, name: str) -> ModuleType:
    """The Python file at ``path`` loaded as module ``name``: scripts outside the package (``../shared/tools``,
    ``image/``) that tests use in place."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def shared_tool(name: str) -> ModuleType:
    """``../shared/tools/<name>.py`` loaded as a module, in place (never copied)."""
    return load_module(require_shared("tools", f"{name}.py"), f"shared_{name}")


def parity_tool() -> ModuleType:
    """``../shared/tools/parity.py``, the shared judge of Bundle parity."""
    return shared_tool("parity")


@pytest.fixture
def doctype_targets(tmp_path: Path) -> dict[str, Path]:
    """What a hostile DOCTYPE may name: a file that exists, one that does not, and a FIFO that nobody writes to
    (a reader would wait for ever). A safe parser answers the same whichever it names, and opens none."""
    existing = tmp_path / "existing.dtd"
    existing.write_text("root:x:0:0:root:/root:/bin/bash\n")
    fifo = tmp_path / "fifo.dtd"
    os.mkfifo(fifo)
    return {"existing": existing, "missing": tmp_path / "missing.dtd", "fifo": fifo}
