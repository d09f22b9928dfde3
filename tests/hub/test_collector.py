"""The hub process's collector settings (``runtime.collector``)."""

from __future__ import annotations

import gc

from orrery_hub.runtime import collector


def test_tune_collects_less_often_and_freezes_what_is_alive() -> None:
    before = gc.get_threshold()
    try:
        collector.tune()
        assert gc.get_threshold() == (collector.YOUNG, before[1], before[2])
        assert gc.get_freeze_count() > 0  # the start-up heap is out of later collections
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # garbage made after it is still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
