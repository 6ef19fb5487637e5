"""The search benchmark's generator and timing (``benchmarks/search.py``), on a small store: the rows it writes are
ones the store reads back and searches as its own, so the figures of ``make bench`` are about the real queries."""

from __future__ import annotations

from pathlib import Path

from adaptor.store import MessageQuery, MessageStore, Status
from benchmarks import search


def test_the_generated_store_is_searched_as_the_console_searches(tmp_path: Path) -> None:
    store = MessageStore(f"sqlite:///{tmp_path / 'messages.db'}")
    store.open()
    try:
        population = search.fill(store, 3000)
        counts = store.count_by_status()
        assert sum(counts.values()) == 3000 and counts[Status.DELIVERED] > 2500
        number = population.nhs_numbers[0]
        [found, *_] = store.list_messages(where=MessageQuery(nhs_number=number))
        assert found.index is not None and found.index.nhs_number == number and found.index.patient_name
        timings = search.measure(store, "sqlite", population, rounds=5)
        assert [t.kind for t in timings] == list(search.searches(population, 1))
        assert all(len(t.samples) == 5 and t.found > 0 for t in timings)
        assert "| sqlite | NHS number |" in search.markdown(timings)
    finally:
        store.close()
