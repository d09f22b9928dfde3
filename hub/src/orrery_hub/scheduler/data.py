"""Placement on data: the filter and score a job that reads datasets passes through before
the pass places it (``cycle.plan`` calls :func:`narrow` first). Pure: no IO, no clock.

For each cluster the job may use, two delays and one price:

* **stage**: the time to bring every dataset the cluster does not already hold there:
  its size over the bandwidth of the link from the nearest copy (an object-store region,
  or a cluster that holds it), from :attr:`DataPolicy.links`;
* **wait**: the time until the job's GPUs are free there, from what runs there and when
  it is expected to end (0 when they are free now);
* **egress**: the size in GB times the link's price per GB.

The cost of a cluster is ``egress + GPUs × (wait + stage) × delay_cost_per_gpu_hour``: an
hour the job's GPUs would wait is priced like the GPUs themselves. The cheapest cluster
wins. When it is one that has GPUs now, the costs become scores (the pass prefers the
cheapest of the clusters that fit it). When it is one that must first free GPUs (its
data is there, its GPUs are busy), every dearer cluster is ruled out for this pass, with
the sums as the reason, so the job waits for the cheaper option and says why.

Residency: a dataset's ``allowed`` clusters (its labels against the Placement policies,
computed by the hub) bound every job that reads it; the data is never staged elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase

from orrery.dataset import human_bytes
from orrery.duration import format_duration
from orrery.ids import ClusterName, JobId
from orrery_hub.scheduler.snapshot import ClusterCapacity, JobRequest, RunningJob, Snapshot
from orrery_hub.scheduler.waitlist import Ordered

INF = math.inf
NOTE_OPTIONS = 3  # options a job's note names (the cheapest, plus where its data is)


@dataclass(frozen=True, slots=True)
class Link:
    """Bandwidth and egress price from one region to another (globs; ``eu-*``). A link
    serves both directions unless the other direction is listed too."""

    src: str
    dst: str
    gbps: float | None = None
    per_gb: float | None = None


@dataclass(frozen=True, slots=True)
class DatasetFacts:
    name: str
    size_bytes: int
    source_regions: tuple[str, ...] = ()  # regions of its object-store copies
    cached_on: frozenset[ClusterName] = frozenset()  # clusters that hold it ready
    allowed: frozenset[ClusterName] | None = None  # residency; None: anywhere
    denied: Mapping[ClusterName, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DataPolicy:
    datasets: Mapping[str, DatasetFacts]
    links: tuple[Link, ...] = ()
    default_gbps: float = 1.0  # between regions no link names
    local_gbps: float = 10.0  # within one region
    delay_cost_per_gpu_hour: float = 2.0
    grace_s: float = 30.0
    unknown_runtime_s: float = 24 * 3600.0  # a running job that declared no maxRuntime
    # A restarted job's last checkpoint is data held where it was written: this many bytes
    # to bring elsewhere (a checkpoint's size is not reported; a 7B model with its
    # optimizer state is about this much).
    checkpoint_bytes: int = 100 * 2**30


@dataclass(frozen=True, slots=True)
class Option:
    cluster: ClusterName
    stage_bytes: int
    stage_s: float
    egress: float
    wait_s: float
    cost: float

    def text(self) -> str:
        parts = []
        if self.stage_bytes:
            parts.append(
                f"{human_bytes(self.stage_bytes)} to stage, ~{format_duration(self.stage_s)}, "
                f"${self.egress:,.0f} egress"
            )
        else:
            parts.append("data here")
        if self.wait_s == 0:
            parts.append("GPUs free now")
        elif self.wait_s == INF:
            parts.append("no known end for the GPUs it needs")
        else:
            parts.append(f"~{format_duration(self.wait_s)} wait for GPUs")
        return f"{self.cluster}: " + ", ".join(parts)


def _first(links: tuple[Link, ...], src: str, dst: str, what: str) -> float | None:
    """The first link from ``src`` to ``dst`` that declares ``what`` (either direction,
    this one first)."""
    for a, b in ((src, dst), (dst, src)):
        for ln in links:
            value: float | None = getattr(ln, what)
            if value is not None and fnmatchcase(a, ln.src) and fnmatchcase(b, ln.dst):
                return value
    return None


def link(policy: DataPolicy, src: str, dst: str) -> tuple[float, float]:
    """(gigabits per second, dollars per GB) from region ``src`` to ``dst``."""
    gbps = _first(policy.links, src, dst, "gbps")
    if not gbps:
        gbps = policy.local_gbps if src == dst else policy.default_gbps
    return gbps, _first(policy.links, src, dst, "per_gb") or 0.0


def transfer(policy: DataPolicy, size: int, src: str, dst: str) -> tuple[float, float]:
    """(seconds, dollars) to move ``size`` bytes from region ``src`` to ``dst``."""
    gbps, per_gb = link(policy, src, dst)
    return size * 8 / (gbps * 1e9), size / 1e9 * per_gb


def _fit_now(c: ClusterCapacity, job: JobRequest) -> tuple[int, dict[str, int], dict[str, int]]:
    """Slices that fit now; free and total GPUs per node of an allowed type."""
    g = job.gpus_per_slice
    free: dict[str, int] = {}
    total: dict[str, int] = {}
    for n in c.nodes:
        typed = job.gpu_types is None or n.gpu_type in job.gpu_types
        if typed and (g == 0 or n.gpu_type is not None):
            free[n.name] = n.free_count
            total[n.name] = n.gpus
    if g == 0:
        return len(job.pending), free, total
    return sum(f // g for f in free.values()), free, total


def wait_for_gpus(
    c: ClusterCapacity,
    job: JobRequest,
    running: list[RunningJob],
    now: float,
    policy: DataPolicy,
) -> float:
    """Seconds until ``job`` fits whole (a gang) or one slice fits, on ``c``, as what runs
    there ends; 0 when it fits now. A job that declared no runtime is taken to end after
    ``policy.unknown_runtime_s``; GPUs busy with nothing the hub counts as running (an
    attempt being stopped, a job just ended) free within the grace."""
    need = len(job.pending) if job.gang else 1
    fit, free, total = _fit_now(c, job)
    if fit >= need:
        return 0.0
    g = max(1, job.gpus_per_slice)
    ends: list[tuple[float, str, int]] = []
    explained = dict.fromkeys(free, 0)
    for r in running:
        end = r.expected_end(now, policy.grace_s)
        if end == INF:
            end = max(now, r.started_at + policy.unknown_runtime_s)
        for s in r.slices:
            if s.cluster == c.name and s.node in free:
                ends.append((end, s.node, len(s.gpus)))
                explained[s.node] += len(s.gpus)
    for node, f in free.items():
        rest = total[node] - f - explained[node]
        if rest > 0:
            ends.append((now + policy.grace_s, node, rest))
    for end, node, gpus in sorted(ends):
        free[node] += gpus
        if sum(f // g for f in free.values()) >= need:
            return max(0.0, end - now)
    return INF


def _region(c: ClusterCapacity) -> str:
    return c.labels.get("region", c.name)


class _Memo:
    """What one pass computes once: a transfer per (dataset, region), a wait per (cluster,
    job shape). Jobs differ in their datasets and shapes, not in what the fleet says."""

    def __init__(
        self, policy: DataPolicy, running_on: Mapping[ClusterName, list[RunningJob]], now: float
    ) -> None:
        self.policy = policy
        self.running_on = running_on
        self.now = now
        self.moves: dict[tuple[str, str], tuple[float, float]] = {}
        self.waits: dict[tuple[ClusterName, int, frozenset[str] | None, int], float] = {}
        self.regions: dict[ClusterName, str] = {}
        self.links: dict[tuple[str, str], tuple[float, float]] = {}
        self.usable: dict[
            tuple[frozenset[ClusterName] | None, bool, frozenset[str] | None],
            list[ClusterCapacity],
        ] = {}

    def move(self, d: DatasetFacts, dst: str) -> tuple[float, float]:
        key = (d.name, dst)
        got = self.moves.get(key)
        if got is None:
            sources = {
                *d.source_regions,
                *(self.regions[k] for k in d.cached_on if k in self.regions),
            }
            moves = []
            for src in sources:
                rate = self.links.get((src, dst))
                if rate is None:  # globs matched once per pair of regions
                    rate = self.links[(src, dst)] = link(self.policy, src, dst)
                moves.append((d.size_bytes * 8 / (rate[0] * 1e9), d.size_bytes / 1e9 * rate[1]))
            got = self.moves[key] = min(moves) if moves else (INF, 0.0)
        return got

    def wait(self, c: ClusterCapacity, job: JobRequest) -> float:
        need = len(job.pending) if job.gang else 1
        key = (c.name, job.gpus_per_slice, job.gpu_types, need)
        got = self.waits.get(key)
        if got is None:
            running = self.running_on.get(c.name, [])
            got = self.waits[key] = wait_for_gpus(c, job, running, self.now, self.policy)
        return got


def reads(job: JobRequest, memo: _Memo) -> list[DatasetFacts]:
    """What the job must have where it runs: its datasets, and its last checkpoint (held
    where it was written: checkpoints are data too)."""
    out = [d for name in job.datasets if (d := memo.policy.datasets.get(name)) is not None]
    if job.checkpoint_cluster is not None and job.checkpoint_cluster in memo.regions:
        out.append(
            DatasetFacts(
                name=f"checkpoint of {job.id}",
                size_bytes=memo.policy.checkpoint_bytes,
                source_regions=(memo.regions[job.checkpoint_cluster],),
                cached_on=frozenset({job.checkpoint_cluster}),
            )
        )
    return out


def options(job: JobRequest, clusters: list[ClusterCapacity], memo: _Memo) -> list[Option]:
    inputs = reads(job, memo)
    out = []
    for c in clusters:
        stage_bytes, stage_s, egress = 0, 0.0, 0.0
        for d in inputs:
            if c.name in d.cached_on:
                continue
            t, usd = memo.move(d, memo.regions[c.name])
            stage_bytes += d.size_bytes
            stage_s += t
            egress += usd
        wait = memo.wait(c, job)
        gpus = max(1, job.gpus)
        cost = egress + gpus * (wait + stage_s) / 3600 * memo.policy.delay_cost_per_gpu_hour
        out.append(Option(c.name, stage_bytes, stage_s, egress, wait, cost))
    return out


def reads_data(jobs: Sequence[JobRequest], kept: Ordered | None) -> bool:
    """Whether any of ``jobs`` reads a dataset or restarts near a checkpoint. ``kept``:
    their kept order, which counts such jobs as they come and go; without it (or with
    one of other jobs) each job is looked at."""
    if kept is not None and kept.size == len(jobs):
        return kept.reading > 0
    return any(j.datasets or j.checkpoint_cluster for j in jobs)


def narrow(
    snapshot: Snapshot, now: float
) -> tuple[Snapshot, dict[JobId, str], dict[JobId, ClusterName]]:
    """The snapshot with each data-reading job's clusters filtered (residency, and dearer
    options while a cheaper one waits for GPUs) and scored (cheapest first); per such job
    one line comparing its options; and the jobs that wait for a cluster that does not
    hold their data yet, with that cluster (it may start staging now: prefetch)."""
    policy = snapshot.data
    if policy is None:
        return snapshot, {}, {}
    if not reads_data(snapshot.jobs, snapshot.order):
        return snapshot, {}, {}
    running_on: dict[ClusterName, list[RunningJob]] = {}
    for r in snapshot.running:
        for cname in {s.cluster for s in r.slices}:
            running_on.setdefault(cname, []).append(r)
    memo = _Memo(policy, running_on, now)
    memo.regions = {c.name: _region(c) for c in snapshot.clusters}
    notes: dict[JobId, str] = {}
    prefetch: dict[JobId, ClusterName] = {}
    jobs = []
    for job in snapshot.jobs:
        if not (job.datasets or job.checkpoint_cluster):
            jobs.append(job)
            continue
        new, note, target = _narrow_job(job, snapshot.clusters, memo)
        jobs.append(new)
        if note:
            notes[job.id] = note
        if target is not None:
            prefetch[job.id] = target
    # The kept order holds the jobs as they were: the pass sorts these itself.
    return replace(snapshot, jobs=tuple(jobs), order=None), notes, prefetch


def _narrow_job(
    job: JobRequest, clusters: tuple[ClusterCapacity, ...], memo: _Memo
) -> tuple[JobRequest, str, ClusterName | None]:
    policy = memo.policy
    allowed = set(job.allowed_clusters) if job.allowed_clusters is not None else None
    denied = dict(job.denied_reasons)
    for name in job.datasets:
        d = policy.datasets.get(name)
        if d is None:
            continue
        if d.allowed is not None:
            every = {c.name for c in clusters}
            allowed = (allowed if allowed is not None else every) & d.allowed
            for cname in every - d.allowed:
                why = d.denied.get(cname, "not allowed by policy")
                denied.setdefault(cname, f"dataset {name} may not be staged here: {why}")
    frozen = frozenset(allowed) if allowed is not None else None
    ukey = (frozen, job.gpus_per_slice == 0, job.gpu_types)
    usable = memo.usable.get(ukey)
    if usable is None:
        usable = memo.usable[ukey] = [
            c
            for c in clusters
            if c.ready
            and (allowed is None or c.name in allowed)
            and any(
                job.gpus_per_slice == 0
                or (
                    n.gpu_type is not None
                    and (job.gpu_types is None or n.gpu_type in job.gpu_types)
                )
                for n in c.nodes
            )
        ]
    opts = options(job, usable, memo)
    if not opts:
        return replace(job, allowed_clusters=frozen, denied_reasons=denied), "", None
    best = min(opts, key=lambda o: (o.cost, o.cluster))
    scores = dict(job.cluster_scores)
    ranked = sorted(opts, key=lambda o: (o.cost, o.cluster))
    # The cheapest few, and where the data already is: enough to see the trade-off.
    shown = ranked[:NOTE_OPTIONS] + [o for o in ranked[NOTE_OPTIONS:] if not o.stage_bytes][:1]
    note = "; ".join(o.text() for o in shown)
    target: ClusterName | None = None
    # A checkpoint alone only scores: a restarted job never waits for the cluster it left.
    if best.wait_s > 0 and best.cost < INF and job.datasets:
        # The cheapest option must first free GPUs: dearer ones that could start now are
        # ruled out this pass, so the job waits for the cheaper one.
        keep = {o.cluster for o in opts if o.cost <= best.cost}
        for o in opts:
            if o.cluster not in keep:
                denied[o.cluster] = (
                    f"{o.text()} (cost ${o.cost:,.0f}) dearer than waiting for "
                    f"{best.text()} (cost ${best.cost:,.0f})"
                )
        base = allowed if allowed is not None else {c.name for c in clusters}
        frozen = frozenset(base - (set(o.cluster for o in opts) - keep))
        note = f"waits for {best.cluster}: " + note
        if best.stage_bytes:
            target = best.cluster  # its data may start moving while its GPUs free up
    else:
        for o in opts:
            if o.cost < INF:
                # Data outranks preference weights: a dollar of cost is a point of score.
                scores[o.cluster] = scores.get(o.cluster, 0.0) - o.cost
    return (
        replace(job, allowed_clusters=frozen, denied_reasons=denied, cluster_scores=scores),
        note,
        target,
    )
