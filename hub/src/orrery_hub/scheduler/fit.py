"""Working copy of free capacity during one scheduling pass, and how slices fit in it.

Used by ``cycle.plan`` (placing), ``preemption`` (nominating freed GPUs) and ``backfill``
(holding GPUs for a reserved job). Nodes are bucketed by how many GPUs they have free, per
GPU type, so "how many slices of g GPUs fit in this cluster" is a sum over a few buckets
rather than a walk over every node, and best-fit ("the node with the fewest free GPUs that
still fits") is a bucket lookup. Buckets are dicts used as ordered sets so that every
choice is deterministic. Answers to ``slices_fit`` are cached until the cluster changes:
one placement touches one cluster, so the other ninety-nine answer from the cache.

Held nodes (reserved for a waiting job until ``until``) are taken out of the buckets, so
no ordinary placement sees them; ``open_holds(end)`` puts back, for one backfill attempt,
the nodes whose hold lasts past ``end``, and ``close_holds`` takes them out again.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from orrery.ids import ClusterName, NodeName
from orrery_hub.scheduler.snapshot import ClusterCapacity, NodeCapacity

TypeKey = frozenset[str] | None


class NodeFree:
    """A node's free GPUs once this pass has taken some: made on first take (copy on
    write), so a pass that touches ten nodes copies ten, not ten thousand."""

    __slots__ = ("free", "gpu_type", "gpus", "name")

    def __init__(self, name: NodeName, gpu_type: str | None, gpus: int, free: list[int]) -> None:
        self.name = name
        self.gpu_type = gpu_type
        self.gpus = gpus
        self.free = free


Node = NodeFree | NodeCapacity
Buckets = dict[str | None, dict[int, dict[NodeName, Node]]]


@dataclass(frozen=True, slots=True)
class Take:
    node: NodeName
    gpus: tuple[int, ...]


class _Index:
    """The buckets of one ``ClusterCapacity``, built once; a pass copies them only for a
    cluster it changes (``ClusterFit._write``)."""

    __slots__ = ("buckets", "by_name", "free_all", "largest", "nodes", "totals", "types")

    def __init__(self, nodes: tuple[NodeCapacity, ...]) -> None:
        self.nodes = nodes
        buckets: Buckets = {}
        totals: dict[str | None, int] = {}
        largest: dict[str | None, int] = {}  # GPUs of the biggest node of each type
        by_name: dict[NodeName, Node] = {}
        free_all = 0
        for n in nodes:
            t = n.gpu_type
            by_name[n.name] = n
            by_count = buckets.get(t)
            if by_count is None:
                by_count = buckets[t] = {}
                totals[t] = 0
            k = len(n.free)
            b = by_count.get(k)
            if b is None:
                b = by_count[k] = {}
            b[n.name] = n
            totals[t] += n.gpus
            if n.gpus > largest.get(t, 0):
                largest[t] = n.gpus
            if t is not None:
                free_all += k
        self.buckets = buckets
        self.totals = totals
        self.largest = largest
        self.by_name = by_name
        self.free_all = free_all
        # The GPU types each allowed set finds here: a pass never adds a type to a
        # cluster, so this holds for every pass over these nodes.
        self.types: dict[TypeKey, list[str | None]] = {}


# Indexes of recently seen node tuples, by identity. A caller that keeps an unchanged
# cluster's ``nodes`` tuple from pass to pass (the simulator does) skips the rebuild; one
# that builds fresh tuples only pays a dict lookup. The result never depends on it: an
# entry is used only for the very tuple object it was built from. Least recently used goes
# first, and the bound is above any fleet we serve: a bound under the number of clusters
# (it was 256, cleared when full) made a hub that knows 1,000 clusters rebuild every
# cluster's index on every pass.
_INDEX: OrderedDict[int, _Index] = OrderedDict()
_INDEX_MAX = 8192


def _index(nodes: tuple[NodeCapacity, ...]) -> _Index:
    key = id(nodes)
    got = _INDEX.get(key)
    if got is not None and got.nodes is nodes:
        _INDEX.move_to_end(key)
        return got
    got = _INDEX[key] = _Index(nodes)
    _INDEX.move_to_end(key)
    while len(_INDEX) > _INDEX_MAX:
        _INDEX.popitem(last=False)  # a replaced tuple's index ages out first
    return got


class ClusterFit:
    """Free GPUs of one cluster, mutable while a pass places slices."""

    def __init__(self, cap: ClusterCapacity) -> None:
        self.name: ClusterName = cap.name
        self.labels = cap.labels
        self.ready = cap.ready
        self._ix = ix = _index(cap.nodes)
        self.nodes = cap.nodes
        # Shared with the index (and so with other passes) until this pass changes the
        # cluster: a pass over 1,000 clusters that places on ten copies ten (``_write``).
        self.by_name: dict[NodeName, Node] = ix.by_name
        # gpu_type -> free count -> ordered set of nodes with exactly that many free
        self.buckets: Buckets = ix.buckets
        self._owned = False
        self.totals = ix.totals
        self.largest = ix.largest
        self.free_all = ix.free_all  # free GPUs outside holds, any type
        self.held: dict[NodeName, float] = {}  # node -> hold lasts until
        self._opened: list[NodeName] = []
        self._fit_cache: dict[tuple[int, TypeKey], int] = {}
        self._types_cache = ix.types
        # The pass's log of clusters whose free GPUs changed, in order (``ranked`` reads
        # it to re-rank only those); None outside a pass.
        self.log: list[ClusterFit] | None = None
        self._free_cache: dict[TypeKey, dict[NodeName, int]] = {}

    def _write(self) -> None:
        """This pass's own buckets and node map, copied on the first change."""
        if not self._owned:
            self.by_name = dict(self.by_name)
            self.buckets = {
                t: {k: dict(ns) for k, ns in by.items()} for t, by in self.buckets.items()
            }
            self._owned = True

    def node(self, name: NodeName) -> Node:
        return self.by_name[name]

    def _types(self, types: TypeKey) -> list[str | None]:
        got = self._types_cache.get(types)
        if got is None:
            if types is None:
                got = [t for t in self.buckets if t is not None]
            else:
                got = [t for t in self.buckets if t in types]
            self._types_cache[types] = got
        return got

    def largest_node(self, types: TypeKey) -> int:
        """GPUs of the biggest node of an allowed type, free or not (0: none)."""
        return max((self.largest.get(t, 0) for t in self._types(types)), default=0)

    def has_type(self, types: TypeKey) -> bool:
        return bool(self._types(types))

    def slices_fit(self, gpus_per_slice: int, types: TypeKey) -> int:
        """How many slices of ``gpus_per_slice`` GPUs of an allowed type fit now."""
        if gpus_per_slice == 0:
            return 1 << 30 if self.nodes else 0
        key = (gpus_per_slice, types)
        got = self._fit_cache.get(key)
        if got is not None:
            return got
        total = 0
        if self.free_all >= gpus_per_slice:
            for t in self._types(types):
                for count, nodes in self.buckets[t].items():
                    if count >= gpus_per_slice and nodes:
                        total += (count // gpus_per_slice) * len(nodes)
        self._fit_cache[key] = total
        return total

    def free_unheld(self, types: TypeKey) -> dict[NodeName, int]:
        """Free GPUs per node of an allowed type, 0 on held nodes (theirs are spoken for):
        a copy to change. Cached until the cluster changes: every preemption search asks
        every eligible cluster, and in a full fleet few of them change in between."""
        got = self._free_cache.get(types)
        if got is None:
            allowed = set(self._types(types))
            got = self._free_cache[types] = {
                x.name: 0 if x.name in self.held else len(x.free)
                for x in self.by_name.values()
                if x.gpu_type is not None and x.gpu_type in allowed
            }
        return dict(got)

    def free_gpus(self, types: TypeKey) -> int:
        return sum(
            count * len(nodes)
            for t in self._types(types)
            for count, nodes in self.buckets[t].items()
        )

    def total_gpus(self, types: TypeKey) -> int:
        return sum(self.totals[t] for t in self._types(types))

    def _move(self, node: Node, old: int) -> None:
        by_count = self.buckets[node.gpu_type]
        del by_count[old][node.name]
        by_count.setdefault(len(node.free), {})[node.name] = node

    def _changed(self) -> None:
        if self._fit_cache:
            self._fit_cache = {}
        if self._free_cache:
            self._free_cache = {}
        if self.log is not None:
            self.log.append(self)

    def _best_node(self, need: int, types: TypeKey) -> Node | None:
        """The node with the fewest free GPUs that still has ``need`` free (best fit)."""
        best: Node | None = None
        best_count = 1 << 30
        for t in self._types(types):
            for count, nodes in self.buckets[t].items():
                if need <= count < best_count and nodes:
                    best, best_count = next(iter(nodes.values())), count
        return best

    def take(self, n: int, gpus_per_slice: int, types: TypeKey) -> list[Take]:
        """Claim ``n`` slices; the caller has checked they fit.

        A job that fits on one node goes on the tightest such node; otherwise each slice
        goes to the tightest node that fits it. Either way whole nodes stay whole for as
        long as possible, for the large jobs that need them.
        """
        if gpus_per_slice == 0:
            first = self.nodes[0]
            return [Take(first.name, ()) for _ in range(n)]
        self._write()
        out: list[Take] = []
        found: Node | None
        whole = self._best_node(n * gpus_per_slice, types) if n > 1 else None
        for _ in range(n):
            found = whole if whole is not None else self._best_node(gpus_per_slice, types)
            if found is None:  # the caller's fit check was wrong: a bug, not a user error
                raise AssertionError(f"{self.name}: slice does not fit")
            node = self._own(found)
            if whole is not None:
                whole = node
            old = len(node.free)
            claimed, node.free = node.free[:gpus_per_slice], node.free[gpus_per_slice:]
            self._move(node, old)
            self.free_all -= gpus_per_slice
            out.append(Take(node.name, tuple(claimed)))
        self._changed()
        return out

    def _own(self, node: Node) -> NodeFree:
        """This pass's own mutable copy of ``node`` (copy on first write)."""
        self._write()
        if isinstance(node, NodeFree):
            return node
        mine = NodeFree(node.name, node.gpu_type, node.gpus, list(node.free))
        self.by_name[node.name] = mine
        bucket = self.buckets[node.gpu_type][len(node.free)]
        if node.name in bucket:
            bucket[node.name] = mine
        return mine

    # Holds: GPUs kept for a waiting job (see ``backfill`` and ``preemption``).

    def hold(self, names: list[NodeName], until: float) -> None:
        self._write()
        for name in names:
            if name in self.held:
                self.held[name] = min(self.held[name], until)
                continue
            node = self.by_name[name]
            del self.buckets[node.gpu_type][len(node.free)][name]
            if node.gpu_type is not None:
                self.free_all -= len(node.free)
            self.held[name] = until
        self._changed()

    def open_holds(self, end: float) -> bool:
        """Lend held nodes whose hold lasts until ``end`` or later; True if any were."""
        if self.held:
            self._write()
        for name, until in self.held.items():
            if end <= until:
                node = self.by_name[name]
                self.buckets[node.gpu_type].setdefault(len(node.free), {})[name] = node
                if node.gpu_type is not None:
                    self.free_all += len(node.free)
                self._opened.append(name)
        if self._opened:
            self._changed()
            return True
        return False

    def close_holds(self) -> None:
        if self._opened:
            self._write()
        for name in self._opened:
            node = self.by_name[name]
            del self.buckets[node.gpu_type][len(node.free)][name]
            if node.gpu_type is not None:
                self.free_all -= len(node.free)
        if self._opened:
            self._opened = []
            self._changed()
