"""The hub process's garbage collector settings.

CPython's default collects its youngest generation every 700 net allocations. Admitting
a batch of 1,000 jobs allocates hundreds of thousands of short-lived objects (parsed
manifests, rows, views), and the collector took ~70 µs of CPU a job, over a quarter of
admission's; collecting every ``YOUNG`` allocations instead, ~14 µs (measured in one
process, admitting 8 batches of 1,000 on SQLite). The hub makes few reference cycles,
so collecting less often costs little memory; and everything alive once the hub has
started (modules, settings, the web app) is frozen out of every later collection.

Under sustained admission that was still a quarter of the hub's CPU (``bench_admission``
batch: 73 young, 6 middle and 1 full collection in one run, 1.4 s in all, collecting
almost nothing): what each job leaves behind lives as long as the job (the job
database's entries, the scheduler's queue), and every collection walked it again, and
again each middle and full collection. So ``settle``, after each admission transaction,
freezes what is alive then (``gc.freeze``: a list splice, no walk): it is walked by no
later collection. Reference cycles that had become garbage by then would be frozen too;
one full collection (unfreeze, collect, freeze) every ``FULL_EVERY_S`` frees them: no
more memory held than ten minutes of cycles, and fewer full walks of the heap than the
collections it replaces (one every 25% of growth). Not one once the heap has grown by
some amount: counting the frozen objects is itself a walk of them all, and under this
load a few such counts took 6% of the hub's time.

A young collection costs mostly the large containers young at the time (a pass's lists
over every waiting job: each reference walked), not the young objects: at 20,000
allocations one took ~14 ms, as long as one at 100,000, so ``YOUNG`` is 100,000. With
both, the same run: 10 young collections and 1 middle, ~0.1 s in all.
"""

from __future__ import annotations

import gc
import time

YOUNG = 100_000  # allocations between collections of the youngest generation (default 700)
FULL_EVERY_S = 600.0  # at most this long between full collections while ``settle`` runs


class _Frozen:
    tuned = False  # only a process that called ``tune`` (the hub's) settles its heap
    full_at = 0.0  # time.monotonic() of the last full collection


def tune() -> None:
    """Call once, when the process has imported what it needs and before it serves."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
    _Frozen.full_at = time.monotonic()
    _Frozen.tuned = True


def settle() -> bool:
    """Call after each admission transaction: freeze what is alive now, or, every
    ``FULL_EVERY_S``, collect everything once and then freeze. True: a full collection
    ran. Nothing in a process that did not ``tune`` (tests, tools): it keeps CPython's
    own collections."""
    if not _Frozen.tuned:
        return False
    now = time.monotonic()
    if now - _Frozen.full_at <= FULL_EVERY_S:
        gc.freeze()
        return False
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _Frozen.full_at = now
    return True
