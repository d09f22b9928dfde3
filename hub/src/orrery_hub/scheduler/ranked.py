"""Clusters ranked by how many slices of one shape fit in them now, kept up to date during
a pass. Called by ``cycle._Pass._place``; pure.

A pass places tens of thousands of jobs, and each asked every eligible cluster how many of
its slices fit, to pick the tightest that holds it whole: a hundred questions per job.
A placement changes one cluster (a hold a few), so per shape the clusters stay sorted by
that count, and only those in the pass's change log (``ClusterFit.log``) move.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from orrery_hub.scheduler.fit import ClusterFit, TypeKey


class Ranked:
    """The eligible clusters ``fits`` (in name order) by slices of ``g`` GPUs of ``types``
    that fit, fewest first, then by name."""

    def __init__(
        self, fits: list[ClusterFit], g: int, types: TypeKey, log: list[ClusterFit]
    ) -> None:
        self.fits = fits
        self.g = g
        self.types = types
        self.log = log
        self.seen = len(log)
        self.pos = {id(f): i for i, f in enumerate(fits)}
        self.ks = [f.slices_fit(g, types) for f in fits]
        self.order = sorted((k, i) for i, k in enumerate(self.ks))

    def _sync(self) -> None:
        log = self.log
        if self.seen == len(log):
            return
        pos, ks, order, g, types = self.pos, self.ks, self.order, self.g, self.types
        for f in log[self.seen :]:
            i = pos.get(id(f))
            if i is None:
                continue
            k = f.slices_fit(g, types)
            old = ks[i]
            if k != old:
                del order[bisect_left(order, (old, i))]
                insort(order, (k, i))
                ks[i] = k
        self.seen = len(log)

    def tightest(self, n: int) -> tuple[ClusterFit, int] | None:
        """The cluster that fits ``n`` slices with the fewest to spare (the first by name
        among equals) and how many fit there; None when no cluster fits them all."""
        self._sync()
        order = self.order
        j = bisect_left(order, (n, -1))
        if j == len(order):
            return None
        k, i = order[j]
        return self.fits[i], k
