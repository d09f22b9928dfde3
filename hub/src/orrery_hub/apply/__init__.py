"""Between the store and the pure scheduler: gather a snapshot, commit the plan back.

``applier`` (the ``Applier`` and its caches), ``queued`` (what it caches and gathers),
``commit`` (placements, preemptions and unplaceable jobs written to the store).
"""
