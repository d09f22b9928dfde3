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
one full collection (unfreeze, collect, freeze) frees them once the frozen heap has
doubled since the last, or ``FULL_EVERY_S`` has passed: less often than the full
collections it replaces (every 25% of growth), and no more memory held than ten minutes
of cycles. A young collection costs mostly the large containers young at the time (a
pass's lists over every waiting job: each reference walked), not the young objects: at
20,000 allocations one took ~14 ms, as long as one at 100,000, so ``YOUNG`` is 100,000.
With both, the same run: 10 young collections, 1 middle and 3 full, 0.44 s in all.
"""

from __future__ import annotations

import gc
import time

YOUNG = 100_000  # allocations between collections of the youngest generation (default 700)
FULL_EVERY_S = 600.0  # at most this long between full collections while ``settle`` runs


class _Frozen:
    """Net tracked objects frozen by ``settle`` since the last full collection, and how
    many the last one left (its doubling sets off the next)."""

    tuned = False  # only a process that called ``tune`` (the hub's) settles its heap
    grown = 0
    young = 0  # young collections counted so far (gc.get_stats)
    after_full = 0
    full_at = 0.0


def tune() -> None:
    """Call once, when the process has imported what it needs and before it serves."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG, older, oldest)
    _Frozen.grown, _Frozen.after_full = 0, gc.get_freeze_count()
    _Frozen.full_at = time.monotonic()
    _Frozen.young = gc.get_stats()[0]["collections"]
    _Frozen.tuned = True


def settle() -> bool:
    """Call after each admission transaction: freeze what is alive now, or, where due,
    collect everything once and then freeze. True: a full collection ran. Nothing in a
    process that did not ``tune`` (tests, tools): it keeps CPython's own collections."""
    if not _Frozen.tuned:
        return False
    # Net allocations since the last young collection or freeze, and at most YOUNG for
    # each young collection since the last call: an overcount of growth (much of it is
    # alive only for a moment: a batch's manifests and views) that only says when to count.
    young = gc.get_stats()[0]["collections"]
    _Frozen.grown += gc.get_count()[0] + YOUNG * (young - _Frozen.young)
    _Frozen.young = young
    gc.freeze()
    now = time.monotonic()
    due = now - _Frozen.full_at > FULL_EVERY_S
    if _Frozen.grown > _Frozen.after_full or due:
        frozen = gc.get_freeze_count()  # exact: a walk of the frozen list (~ms a million)
        _Frozen.grown = frozen - _Frozen.after_full
        if due or _Frozen.grown > _Frozen.after_full:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            _Frozen.grown, _Frozen.after_full, _Frozen.full_at = 0, gc.get_freeze_count(), now
            return True
    return False
