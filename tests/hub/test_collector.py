"""The hub process's collector settings (``runtime.collector``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from orrery_hub.runtime import collector


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        collector.tune()
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
        collector._Frozen.tuned = False


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


def test_tune_collects_less_often_and_freezes_what_is_alive(tuned: None) -> None:
    assert gc.get_threshold()[0] == collector.YOUNG
    assert gc.get_freeze_count() > 0  # the start-up heap is out of later collections
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1  # garbage made after it is still collected


def test_settle_freezes_what_admission_left_alive(tuned: None) -> None:
    frozen = gc.get_freeze_count()
    kept = [_Node() for _ in range(100)]
    assert collector.settle() is False  # no full collection due yet
    assert gc.get_freeze_count() >= frozen + 100
    assert kept


def test_a_cycle_frozen_as_garbage_is_freed_by_the_next_full_collection(
    tuned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = _Node()
    gone = weakref.ref(node)
    collector.settle()
    del node
    gc.collect()
    assert gone() is not None  # frozen: no collection sees it
    monkeypatch.setattr(collector, "FULL_EVERY_S", 0.0)  # due
    assert collector.settle() is True
    assert gone() is None


def test_settle_does_nothing_in_a_process_that_did_not_tune() -> None:
    frozen = gc.get_freeze_count()
    assert collector.settle() is False
    assert gc.get_freeze_count() == frozen
