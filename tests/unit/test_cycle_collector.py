"""A service's cycle collector leaves its working set alone: thousands of live objects (requests and events in
flight) are no reason to collect, and cyclic garbage is still collected."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from refundflow_shared.http_service import YOUNG_OBJECTS_PER_COLLECTION, settle_the_collector


@pytest.fixture
def collector_runs() -> Iterator[list[int]]:
    """The generation of every collection that runs, with the collector settled as a service settles it."""
    threshold = gc.get_threshold()
    runs: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            runs.append(info["generation"])

    settle_the_collector()
    gc.collect()  # start from an empty young generation
    gc.callbacks.append(record)
    try:
        yield runs
    finally:
        gc.callbacks.remove(record)
        gc.set_threshold(*threshold)
        gc.unfreeze()


def test_a_working_set_of_thousands_of_objects_is_not_collected(collector_runs: list[int]) -> None:
    in_flight = [{"refund": i} for i in range(5_000)]  # about what a burst keeps alive at once
    assert collector_runs == []
    del in_flight


def test_cyclic_garbage_is_still_collected(collector_runs: list[int]) -> None:
    for _ in range(2 * YOUNG_OBJECTS_PER_COLLECTION):  # twice the threshold: it is passed whatever else ran
        cycle: list[object] = []
        cycle.append(cycle)  # unreachable once the name moves on: only the collector frees it
    assert collector_runs, "the collector ran once that much cyclic garbage had piled up"
