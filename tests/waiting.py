"""Waiting for something a test can observe, instead of sleeping and hoping.

    wait_until(lambda: store.count_by_status()[Status.DELIVERED] == 3, "three deliveries")

The condition is polled until it is true; after ``timeout`` seconds the test fails with an assertion that names
what it was waiting for. The first polls come quickly, so a fast event costs a fast test; then the pause doubles up
to :data:`SLOWEST_POLL_SECONDS`, so a condition that reads a database or a server does not load a busy machine
during a long wait.
"""

from __future__ import annotations

import time
from collections.abc import Callable

WAIT_SECONDS = 20.0
FIRST_POLL_SECONDS = 0.02
SLOWEST_POLL_SECONDS = 0.1


def wait_until(condition: Callable[[], object], what: str, timeout: float = WAIT_SECONDS) -> None:
    """Return as soon as ``condition()`` is true; raise AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = FIRST_POLL_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(pause)
        pause = min(pause * 2, SLOWEST_POLL_SECONDS)
