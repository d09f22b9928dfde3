"""The scheduler's input: plain, immutable data. No IO and no clock: ``now`` is passed in.

Built by the hub from its store and inventory (``orrery_hub.apply.applier.gather`` and
``orrery_hub.runtime.inventory``), by the simulator from a trace (``orrery_hub.sim.engine``), and by
tests from readable helpers. Every field added after the first release has a default that
reproduces the first release's behaviour, so a caller that does not know about queues,
running jobs or policies keeps working unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex

if TYPE_CHECKING:
    from orrery_hub.scheduler.data import DataPolicy
    from orrery_hub.scheduler.waitlist import Ordered


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    name: NodeName
    gpu_type: str | None  # None: a node without GPUs
    gpus: int
    free: tuple[int, ...]  # indices of the GPUs free to assign, ascending

    @property
    def free_count(self) -> int:
        return len(self.free)


@dataclass(frozen=True, slots=True)
class ClusterCapacity:
    name: ClusterName
    labels: Mapping[str, str]
    ready: bool  # False: Lost (silent past the failover timeout) — never placed on
    nodes: tuple[NodeCapacity, ...]


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A job with slices waiting for placement."""

    id: JobId
    name: str
    priority: int
    seq: int  # submission order: earlier first among equal priority
    gpus_per_slice: int
    gpu_types: frozenset[str] | None  # None: any type
    pending: tuple[SliceIndex, ...]  # slices to place now
    gang: bool  # True: all of ``pending`` or none
    queue: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    # Clusters the policy engine allows (None: all), and why the others are not allowed.
    allowed_clusters: frozenset[ClusterName] | None = None
    denied_reasons: Mapping[ClusterName, str] = field(default_factory=dict)
    # Soft preferences: a higher score wins among clusters that fit equally well.
    cluster_scores: Mapping[ClusterName, float] = field(default_factory=dict)
    # The manifest's maxRuntime in seconds; None: unknown, so never backfilled.
    max_runtime: float | None = None
    # How long it is expected to run, in seconds, when better known than ``max_runtime``
    # (the simulator knows the trace's durations; the hub may learn it per queue/team).
    # Only ``Policy.shortest_first`` reads it; None: ``max_runtime``, then the snapshot's
    # per-queue/team history (``Snapshot.runtime_history``).
    expected_runtime: float | None = None
    # Datasets the job reads (names in ``Snapshot.data``): placement weighs staging them.
    datasets: tuple[str, ...] = ()
    # Where its last checkpoint was written (a restarted job): placement prefers to stay
    # near it, as near its data (``scheduler.data``). None: none, or not known.
    checkpoint_cluster: ClusterName | None = None

    @property
    def team(self) -> str:
        return self.labels.get("team", "")

    @property
    def gpus(self) -> int:
        """GPUs the pending slices need together."""
        return self.gpus_per_slice * len(self.pending)


@dataclass(frozen=True, slots=True)
class RunningSlice:
    """One slice of a running job: where it holds GPUs."""

    index: SliceIndex
    cluster: ClusterName
    node: NodeName
    gpus: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job holding GPUs now: what preemption may evict and what backfill waits for.

    ``stopping`` marks a job already ordered to stop (preempted, cancelled): its GPUs come
    free within the grace period, and it is never chosen as a victim again.
    """

    id: JobId
    queue: str
    priority: int
    slices: tuple[RunningSlice, ...]
    started_at: float
    last_checkpoint_at: float | None = None  # None: never checkpointed, all work since start
    max_runtime: float | None = None  # expected end is started_at + max_runtime
    labels: Mapping[str, str] = field(default_factory=dict)
    preemptible: bool = True
    stopping: bool = False
    # The job a stopping victim makes room for (None: stopping for another reason).
    preempted_for: JobId | None = None
    # GPUs held, counted once when made: a pass reads it for every running job (usage
    # per tenant and queue, victims), tens of thousands of times on a large fleet.
    gpus: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", sum(len(s.gpus) for s in self.slices))

    @property
    def team(self) -> str:
        return self.labels.get("team", "")

    def expected_end(self, now: float, grace_s: float) -> float:
        """When its GPUs are expected free: within the grace if stopping, else at its
        declared end; infinity when it declared none."""
        if self.stopping:
            return now + grace_s
        if self.max_runtime is None:
            return float("inf")
        return max(now, self.started_at + self.max_runtime)

    def lost_gpu_seconds(self, now: float) -> float:
        """GPU-seconds of work lost if evicted now: everything since its last checkpoint."""
        since = self.last_checkpoint_at if self.last_checkpoint_at is not None else self.started_at
        return self.gpus * max(0.0, now - since)


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's share of the fleet.

    ``weight`` scales its fair share (twice the weight: twice the GPUs before it counts as
    ahead). ``guaranteed`` is its nominal quota in GPUs (None: no quota, never limited by
    one). Queues in the same ``cohort`` lend each other their unused guarantee; a queue
    with no cohort cannot borrow. ``borrow_limit`` caps what it may borrow (None: any).
    """

    name: str
    weight: float = 1.0
    guaranteed: int | None = None
    cohort: str | None = None
    borrow_limit: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Which stages of the pass run. The defaults reproduce the first release: priority
    then submission order across all queues, no quotas, no preemption, no backfill.

    ``fair_share``: order by weighted dominant (GPU) share of each tenant, tenant being
    the queue, or the team when ``tenant`` is "team"; within a tenant priority then
    submission order. ``fifo``: submission order alone (the simulator's baseline).
    ``type_aware``: a job that accepts several GPU types goes, among clusters that fit it
    whole, to the one whose GPU type the fewest single-type jobs wait for, so it does not
    take the scarce GPUs that constrained jobs need (tightest fit breaks ties).
    ``grace_s``: SIGTERM to SIGKILL for preempted victims; the hub sends it in the order.
    ``max_preemptions``: victims one pass may choose, so one pass never evicts half a fleet;
    ``preemption_attempts``: victim searches per pass, since each one costs a walk over
    what runs in every eligible cluster.
    """

    fifo: bool = False
    # Strict FIFO: nothing is placed past the first job that does not fit (head-of-line
    # blocking, the textbook baseline); off: later jobs that fit skip ahead (first fit).
    head_of_line: bool = False
    fair_share: bool = False
    tenant: str = "queue"
    quotas: bool = False
    preemption: bool = False
    backfill: bool = False
    grace_s: float = 30.0
    max_preemptions: int = 64
    type_aware: bool = False
    preemption_attempts: int = 16  # victim searches per pass; the rest try next pass
    # A job placed less than this long ago is never a victim, so no job is preempted over
    # and over. 0 keeps the simulator's published figures; the hub defaults to 60 s.
    min_run_s: float = 0.0
    # Least expected service first (Helios' QSSF; Tiresias orders by least *attained*
    # service, which needs no estimate but preempts constantly): within a tenant (or across
    # all jobs without fair share), jobs are offered by expected GPU-seconds (GPUs x
    # expected runtime), then priority, then submission. Jobs with no estimate come last.
    shortest_first: bool = False
    # Preempt only when the preemptor's expected wait saved (GPU-seconds: its GPUs x the
    # time until it would fit without evicting anyone) exceeds the work the victims lose
    # since their last checkpoints plus the grace their GPUs sit stopping.
    preempt_for_gain: bool = False

    @staticmethod
    def full() -> Policy:
        """Every stage on: what ``orrery sim --policy orrery`` runs."""
        return Policy(
            fair_share=True, quotas=True, preemption=True, backfill=True, type_aware=True,
            shortest_first=True, preempt_for_gain=True,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    clusters: tuple[ClusterCapacity, ...]
    jobs: tuple[JobRequest, ...]
    running: tuple[RunningJob, ...] = ()
    queues: tuple[QueueConfig, ...] = ()  # queues not listed get QueueConfig(name)
    policy: Policy = field(default_factory=Policy)
    # Learned runtimes in seconds (e.g. the median of recent finished jobs), keyed by
    # "queue/team" and by "queue": what ``Policy.shortest_first`` uses for a job that
    # declares neither ``expected_runtime`` nor ``max_runtime``.
    runtime_history: Mapping[str, float] = field(default_factory=dict)
    # Datasets, links and prices: what placement on data (``data.narrow``) weighs. None:
    # no job reads data, or a caller that does not know about it.
    data: DataPolicy | None = None
    # ``jobs`` already in offer order, kept between passes (``waitlist.WaitList.view``):
    # the pass then sorts nothing and writes most wait reasons a shape at a time. It must
    # hold exactly ``jobs``; a pass ignores one made for another policy or history. None:
    # the pass sorts ``jobs`` itself.
    order: Ordered | None = None
