"""Shared test helpers: where ``../shared`` is, and the rule for tests that need it.

``../shared`` (the corpus, the published schemas, the tools) sits beside the checkout; tests read it in
place and never copy it. A test that needs it calls :func:`require_shared`: when it is missing the test is
skipped on a developer machine but FAILS when the ``CI`` environment variable is set, so CI can never pass by
skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def require_shared(*parts: str) -> Path:
    """``SHARED / parts`` if it exists; otherwise fail under CI, skip elsewhere."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        message = f"{path} is missing (../shared must sit beside the checkout)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared_dir() -> Path:
    """The ``../shared`` folder (see :func:`require_shared`)."""
    return require_shared()
