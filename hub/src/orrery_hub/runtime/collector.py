"""The hub process's garbage collector settings.

CPython's default collects its youngest generation every 700 net allocations. Admitting
a batch of 1,000 jobs allocates hundreds of thousands of short-lived objects (parsed
manifests, rows, views), and the collector took ~70 µs of CPU a job, over a quarter of
admission's; collecting every ``YOUNG`` allocations instead, ~14 µs (measured in one
process, admitting 8 batches of 1,000 on SQLite). The hub makes few reference cycles,
so collecting less often costs little memory; and everything alive once the hub has
started (modules, settings, the web app) is frozen out of every later collection.
"""

from __future__ import annotations

import gc

YOUNG = 20_000  # allocations between collections of the youngest generation (default 700)


def tune() -> None:
    """Call once, when the process has imported what it needs and before it serves."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
