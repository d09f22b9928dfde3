"""The global GPU inventory, built from heartbeats and kept in memory.

A cluster is Ready while it reports, and Lost once silent past the failover timeout. The
store keeps a copy (``ClusterRow``) so a restarted hub knows its clusters; on start, and
whenever the hub itself was cut off from NATS, every cluster gets a fresh grace period: a
hub that could not hear anyone must not conclude that everyone died.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from orrery.ids import ClusterName, NodeName
from orrery.resources import ClusterPublic, GpuCount
from orrery.wire import CachedDataset, Heartbeat, NodeReport
from orrery_hub.scheduler import ClusterCapacity, NodeCapacity

Held = Mapping[tuple[str, str], set[int]]  # (cluster, node) -> GPU indices held by open attempts
NONE_HELD: Mapping[str, frozenset[int]] = {}


@dataclass
class ClusterView:
    name: str
    labels: dict[str, str]
    address: str
    executor: str
    incarnation: str
    last_seen: float
    state: str = "Ready"
    nodes: list[NodeReport] = field(default_factory=list)
    running: int = 0
    lease_s: float | None = None  # the spoke's lease, as it last reported it
    # Nodes this cluster had that are now missing from its reports or not ready, and since
    # when (hub clock): after the failover timeout their slices are placed again.
    node_gone_since: dict[str, float] = field(default_factory=dict)
    # What its dataset cache holds (and is staging), as last reported: never stored, the
    # next heartbeat after a hub restart says it again.
    datasets: list[CachedDataset] = field(default_factory=list)
    # The heartbeat's node list last observed (the object: a repeat shares it, see
    # ``runtime.repeats``) when every node in it was ready; None otherwise.
    reported: list[NodeReport] | None = None


class Inventory:
    def __init__(self) -> None:
        self.clusters: dict[str, ClusterView] = {}
        # Moves whenever a cluster joins, leaves Ready, comes back, or changes its labels
        # or node list (the object): what the cluster facts are made of. Checking this
        # one number costs nothing; comparing 1,000 clusters' keys cost ~0.2 ms a call,
        # and every admission batch and every pass asked.
        self.version = 0

    def replace(self, views: Iterable[ClusterView]) -> None:
        """Every cluster as given (a standby's view of the store)."""
        self.clusters = {v.name: v for v in views}
        self.version += 1

    def restore(self, views: Iterable[ClusterView], now: float) -> None:
        """Clusters known from the store; each gets a grace period from ``now``."""
        for v in views:
            v.last_seen = now
            self.clusters[v.name] = v
        self.version += 1

    def observe(self, hb: Heartbeat, now: float) -> tuple[ClusterView, bool]:
        """Record a heartbeat; returns the view and whether the cluster came back from Lost."""
        v = self.clusters.get(hb.cluster)
        came_back = v is not None and v.state == "Lost"
        moved = v is None or v.state != "Ready"
        if v is None:
            v = ClusterView(
                name=hb.cluster,
                labels={},
                address=hb.address,
                executor=hb.executor,
                incarnation=hb.incarnation,
                last_seen=now,
            )
            self.clusters[hb.cluster] = v
        if hb.nodes is not v.reported or v.node_gone_since:
            reported = {n.name: n for n in hb.nodes}
            known = {n.name for n in v.nodes} | set(v.node_gone_since)
            for name in known:
                node = reported.get(name)
                if node is None or not node.ready:
                    v.node_gone_since.setdefault(name, now)
                else:
                    v.node_gone_since.pop(name, None)
            for name, node in reported.items():
                if node.ready:
                    v.node_gone_since.pop(name, None)
            v.nodes = list(hb.nodes)
            moved = True
            ready = not v.node_gone_since and all(n.ready for n in hb.nodes)
            v.reported = hb.nodes if ready else None
        # Else: the very list observed last, every node in it ready and none missing, so
        # nothing above would change (~0.2 ms a beat for 100 nodes, spared).
        if hb.labels != v.labels:
            v.labels = dict(hb.labels)
            moved = True
        if moved:
            self.version += 1
        v.address = hb.address
        v.executor = hb.executor
        v.incarnation = hb.incarnation
        v.last_seen = now
        v.lease_s = hb.lease_s
        v.state = "Ready"
        v.datasets = list(hb.datasets or [])
        v.running = sum(1 for s in hb.slices if not s.phase.terminal)
        return v, came_back

    def grace(self, now: float) -> None:
        for v in self.clusters.values():
            v.last_seen = max(v.last_seen, now)

    def newly_lost(self, now: float, timeout: float) -> list[str]:
        """Ready clusters silent for longer than ``timeout``; marks them Lost."""
        lost = []
        for v in self.clusters.values():
            if v.state == "Ready" and now - v.last_seen > timeout:
                v.state = "Lost"
                lost.append(v.name)
                self.version += 1
        return lost

    def nodes_lost(self, now: float, timeout: float) -> dict[str, set[str]]:
        """Per Ready cluster, nodes gone or not ready for longer than ``timeout``. Each is
        reported once: it is forgotten here, and comes back with its next report."""
        out: dict[str, set[str]] = {}
        for v in self.clusters.values():
            if v.state != "Ready":
                continue
            gone = {n for n, since in v.node_gone_since.items() if now - since > timeout}
            if gone:
                out[v.name] = gone
                for n in gone:
                    del v.node_gone_since[n]
        return out

    def capacity(
        self, held: Held, memo: dict[str, tuple[Seen, ClusterCapacity]] | None = None
    ) -> tuple[ClusterCapacity, ...]:
        """What the scheduler may use: reported free GPUs minus what open attempts hold.

        ``memo`` (kept by the caller from one pass to the next): a cluster whose node list
        (the object), labels, state and held GPUs are what they were is the capacity made
        for it last time; 100,000 nodes made again cost ~0.2 s a pass, and a fleet that
        runs jobs everywhere holds GPUs on every cluster."""
        out = []
        here: dict[str, dict[str, frozenset[int]]] = {}  # held GPUs per cluster, per node
        if memo is not None:
            for (cluster, node), gpus in held.items():
                if gpus:
                    here.setdefault(cluster, {})[node] = frozenset(gpus)
        for v in self.clusters.values():
            mine = here.get(v.name, NONE_HELD)
            if memo is not None:
                last = memo.get(v.name)
                if last is not None and last[0].holds(v, mine):
                    out.append(last[1])
                    continue
            nodes = []
            for n in v.nodes:
                if not n.ready:
                    free: tuple[int, ...] = ()
                else:
                    taken = held.get((v.name, n.name), set())
                    free = tuple(sorted(i for i in set(n.free) if i not in taken))
                nodes.append(
                    NodeCapacity(name=NodeName(n.name), gpu_type=n.gpu_type, gpus=n.gpus, free=free)
                )
            cap = ClusterCapacity(
                name=ClusterName(v.name),
                labels=dict(v.labels),
                ready=v.state == "Ready",
                nodes=tuple(nodes),
            )
            if memo is not None:
                memo[v.name] = (Seen.of(v, mine), cap)
            out.append(cap)
        if memo is not None and len(memo) > len(self.clusters):
            for gone in set(memo) - set(self.clusters):
                del memo[gone]
        return tuple(out)

    def public(self, held: Held) -> list[ClusterPublic]:
        out = []
        for v in sorted(self.clusters.values(), key=lambda c: c.name):
            gpus: dict[str, list[int]] = {}
            for n in v.nodes:
                if n.gpu_type is None:
                    continue
                taken = held.get((v.name, n.name), set())
                free = len([i for i in n.free if i not in taken]) if n.ready else 0
                t = gpus.setdefault(n.gpu_type, [0, 0])
                t[0] += n.gpus
                t[1] += free
            out.append(
                ClusterPublic(
                    name=v.name,
                    region=v.labels.get("region"),
                    labels=v.labels,
                    state=v.state,
                    executor=v.executor,
                    nodes=len(v.nodes),
                    gpus={k: GpuCount(total=a, free=b) for k, (a, b) in sorted(gpus.items())},
                    last_heartbeat=v.last_seen,
                    running_slices=v.running,
                )
            )
        return out


@dataclass(frozen=True)
class Seen:
    """What a cluster's capacity was made of: its node list (the object), state, labels,
    and the GPUs open attempts held on each node."""

    nodes: list[NodeReport]
    state: str
    labels: dict[str, str]
    held: Mapping[str, frozenset[int]] = field(default_factory=dict)

    @staticmethod
    def of(v: ClusterView, held: Mapping[str, frozenset[int]] | None = None) -> Seen:
        return Seen(v.nodes, v.state, dict(v.labels), held if held is not None else {})

    def holds(self, v: ClusterView, held: Mapping[str, frozenset[int]] | None = None) -> bool:
        return (
            self.nodes is v.nodes
            and self.state == v.state
            and self.labels == v.labels
            and self.held == (held if held is not None else NONE_HELD)
        )


class NodeTypes(Mapping[tuple[str, str], str | None]):
    """(cluster, node) -> its GPU type, indexed a cluster at a time as asked: a pass places
    a few slices, and indexing every node first cost ~12 ms of the event loop per pass with
    1,000 clusters of 100 nodes."""

    def __init__(self, nodes: Mapping[str, list[NodeReport]]) -> None:
        self._nodes = nodes
        self._index: dict[str, dict[str, str | None]] = {}

    def _of(self, cluster: str) -> dict[str, str | None]:
        idx = self._index.get(cluster)
        if idx is None:
            idx = {n.name: n.gpu_type for n in self._nodes.get(cluster, ())}
            self._index[cluster] = idx
        return idx

    def __getitem__(self, key: tuple[str, str]) -> str | None:
        return self._of(key[0])[key[1]]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return ((c, n.name) for c, nodes in self._nodes.items() for n in nodes)

    def __len__(self) -> int:
        return sum(len(nodes) for nodes in self._nodes.values())
