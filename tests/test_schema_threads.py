"""The published schemas are compiled once, even when the first requests arrive on several threads at once.

libxml2 fails when threads compile mutually including XSDs concurrently; before the compile lock a restarted
server under load cached that failure and skipped rules D4/D6 (and answered 2200) until restarted.
"""

from __future__ import annotations

import threading

from conftest import require_shared

from adaptor.itk import schemas


def test_concurrent_first_compilation_gives_one_working_schema() -> None:
    schema_dir = str(require_shared("schemas"))
    schemas._published_schema.cache_clear()  # type: ignore[attr-defined]
    results: list[object] = []
    barrier = threading.Barrier(8)

    def compile_cda() -> None:
        barrier.wait()
        results.append(schemas.cda_schema(schema_dir))
        results.append(schemas.pathways_schema(schema_dir))

    threads = [threading.Thread(target=compile_cda) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(results) == 16
    assert all(schema is not None for schema in results)
    assert len({id(schema) for schema in results}) == 2  # one CDA schema, one Pathways schema
