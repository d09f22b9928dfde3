"""The waiting jobs, kept in the pass's offer order between passes (as Armada's job
database keeps its queues sorted), so that a pass over a snapshot that carries the order
(``Snapshot.order``) sorts nothing and writes most wait reasons a shape at a time.

Whoever holds the waiting jobs from pass to pass (the simulator, the benchmarks; the hub
through its job database) keeps a ``WaitList``, tells it what changed (``put`` and
``drop``: O(log n) to find the place, plus one C-level ``list.insert``), and hands the
pass ``view()``: each tenant's jobs already sorted, copied only for tenants that changed.

The order is the one ``fairness._sort`` gives: per tenant with fair share (else one list),
by least expected service first (``shortest_first``), then priority, then submission,
then arrival here (a stable sort of the jobs in the order they were put). It depends on
the policy and, for jobs with no runtime of their own, on the learned runtimes: ``basis``
names both, and a pass ignores a view made for another basis. Pure: no IO, no clock.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from orrery.ids import ClusterName, JobId
from orrery_hub.scheduler.fairness import expected_service, tenant_of
from orrery_hub.scheduler.snapshot import JobRequest, Policy

# (fifo, fair share, tenant, shortest first, learned runtimes when they matter)
OrderBasis = tuple[bool, bool, str, bool, tuple[tuple[str, float], ...]]
# What a waiting job's reason depends on: slice GPUs, types, allowed clusters, slices, and
# why the other clusters are not allowed.
ReasonKey = tuple[
    int,
    frozenset[str] | None,
    frozenset[ClusterName] | None,
    int,
    tuple[tuple[ClusterName, str], ...],
]
# What a job's preemption attempt at the end of a pass depends on (``cycle._tail``): its
# shape, priority and queue.
Kind = tuple[int, frozenset[str] | None, frozenset[ClusterName] | None, int, int, str]
# What a failing search reads of a job (``cycle._Pass._alike``): jobs alike in all of it
# fail alike while the pass places, preempts and reserves nothing. None: never taken as
# alike (a job with policy scores per cluster is always searched).
Alike = tuple[
    int, frozenset[str] | None, frozenset[ClusterName] | None, int, bool, str, int,
    float | None, str | None,
]
_Key = tuple[float, int, int, int]  # the order within a tenant: (service, -priority, seq, n)


def basis(policy: Policy, history: Mapping[str, float] | None) -> OrderBasis:
    """What the offer order depends on, to compare a kept order with the pass's policy."""
    fair = policy.fair_share and not policy.fifo
    sjf = policy.shortest_first and not policy.fifo
    hist = tuple(sorted((history or {}).items())) if sjf else ()
    return (policy.fifo, fair, policy.tenant if fair else "", sjf, hist)


def kind_of(job: JobRequest) -> Kind:
    return (
        job.gpus_per_slice, job.gpu_types, job.allowed_clusters, len(job.pending),
        job.priority, job.queue,
    )


def alike_key(job: JobRequest) -> Alike | None:
    if job.cluster_scores:
        return None
    return (job.gpus_per_slice, job.gpu_types, job.allowed_clusters, len(job.pending),
            job.gang, job.queue, job.priority, job.max_runtime, job.labels.get("team"))  # fmt: skip


def reason_key(job: JobRequest) -> ReasonKey:
    return (
        job.gpus_per_slice,
        job.gpu_types,
        job.allowed_clusters,
        len(job.pending),
        tuple(sorted(job.denied_reasons.items())) if job.denied_reasons else (),
    )


@dataclass(frozen=True, slots=True)
class Ordered:
    """One pass's view of a ``WaitList``: immutable, safe to plan from on another thread.

    ``groups``: each tenant's waiting jobs in offer order ("" holds them all without fair
    share). ``shapes``: the jobs with GPU slices to place, grouped by what their wait
    reason depends on, with one of them to describe the group. ``cpu``: jobs with only
    CPU slices to place (placed even on a full fleet, so never written off by shape).
    ``size``: how many jobs in all; it must equal ``len(Snapshot.jobs)``.
    """

    basis: OrderBasis
    groups: Mapping[str, tuple[JobRequest, ...]]
    shapes: Mapping[ReasonKey, tuple[JobRequest, frozenset[JobId]]]
    cpu: frozenset[JobId]
    size: int
    # The sort key of each job in ``groups``, alike; and per tenant and ``Kind``, the jobs
    # with GPU slices to place in offer order, with their keys (for ``tail.KeptTail``).
    keys: Mapping[str, tuple[_Key, ...]]
    kinds: Mapping[tuple[str, Kind], tuple[tuple[_Key, ...], tuple[JobRequest, ...]]]
    # GPUs wanted by the jobs that accept one GPU type only, per type (``types.rank``);
    # how many jobs read datasets or restart near a checkpoint (``data.narrow``).
    single_type: Mapping[str, int]
    reading: int
    # The jobs with GPU slices to place, by ``alike_key`` (``tail.KeptTail._rest_known``).
    alike: Mapping[Alike | None, frozenset[JobId]]


class WaitList:
    """Waiting jobs by id, each tenant's kept sorted; see the module doc."""

    def __init__(
        self,
        policy: Policy,
        history: Mapping[str, float] | None = None,
        jobs: Iterable[JobRequest] = (),
    ) -> None:
        self._reset(policy, history)
        self._load(jobs)

    def _reset(self, policy: Policy, history: Mapping[str, float] | None) -> None:
        self._policy = policy
        self._history = dict(history or {})
        self._basis = basis(policy, history)
        self._by_id: dict[JobId, JobRequest] = {}
        self._key_of: dict[JobId, tuple[str, _Key]] = {}
        self._keys: dict[str, list[_Key]] = {}
        self._lists: dict[str, list[JobRequest]] = {}
        self._frozen: dict[str, tuple[JobRequest, ...]] = {}
        self._frozen_keys: dict[str, tuple[_Key, ...]] = {}
        self._kinds: dict[tuple[str, Kind], tuple[list[_Key], list[JobRequest]]] = {}
        self._frozen_kinds: dict[
            tuple[str, Kind], tuple[tuple[_Key, ...], tuple[JobRequest, ...]]
        ] = {}
        self._shapes: dict[ReasonKey, dict[JobId, JobRequest]] = {}
        self._frozen_shapes: dict[ReasonKey, tuple[JobRequest, frozenset[JobId]]] = {}
        self._alike: dict[Alike | None, set[JobId]] = {}
        self._frozen_alike: dict[Alike | None, frozenset[JobId]] = {}
        self._cpu: set[JobId] = set()
        self._frozen_cpu: frozenset[JobId] | None = frozenset()
        self._arrivals = 0
        self._single_type: dict[str, int] = {}
        self._reading = 0

    def _load(self, jobs: Iterable[JobRequest]) -> None:
        """Many jobs into an empty list at once: one sort per list, not one insert each
        (inserting 100,000 jobs one by one moves gigabytes of list memory). The same
        result as putting them in this order."""
        by_id: dict[JobId, JobRequest] = {}
        for j in jobs:
            by_id.pop(j.id, None)  # put again: it moves to the end
            by_id[j.id] = j
        rows: dict[str, list[tuple[_Key, JobRequest]]] = {}
        kinds: dict[tuple[str, Kind], list[tuple[_Key, JobRequest]]] = {}
        for j in by_id.values():
            self._count(j, 1)
            self._arrivals += 1
            tenant, key = self._key(j)
            self._key_of[j.id] = (tenant, key)
            got = rows.get(tenant)
            if got is None:
                got = rows[tenant] = []
            got.append((key, j))
            if j.pending:
                if j.gpus_per_slice:
                    self._shapes.setdefault(reason_key(j), {})[j.id] = j
                    self._alike.setdefault(alike_key(j), set()).add(j.id)
                    kinds.setdefault((tenant, kind_of(j)), []).append((key, j))
                else:
                    self._cpu.add(j.id)
        self._by_id = by_id
        for tenant, kj in rows.items():
            kj.sort(key=_first)  # keys are unique (arrival last): jobs never compared
            self._keys[tenant] = [k for k, _ in kj]
            self._lists[tenant] = [j for _, j in kj]
        for tk, kj in kinds.items():
            kj.sort(key=_first)
            self._kinds[tk] = ([k for k, _ in kj], [j for _, j in kj])
        self._frozen_cpu = None

    def _count(self, job: JobRequest, sign: int) -> None:
        if job.gpu_types is not None and len(job.gpu_types) == 1:
            (t,) = job.gpu_types
            self._single_type[t] = self._single_type.get(t, 0) + sign * job.gpus
        if job.datasets or job.checkpoint_cluster:
            self._reading += sign

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._by_id

    def get(self, job_id: JobId) -> JobRequest | None:
        return self._by_id.get(job_id)

    def jobs(self) -> tuple[JobRequest, ...]:
        """Every job, in the order they were put: ``Snapshot.jobs`` to go with ``view``."""
        return tuple(self._by_id.values())

    def _key(self, job: JobRequest) -> tuple[str, _Key]:
        pol = self._policy
        fifo = pol.fifo
        tenant = tenant_of(pol, job.queue, job.team) if self._basis[1] else ""
        service = expected_service(job, self._history) if self._basis[3] else 0.0
        return tenant, (service, 0 if fifo else -job.priority, job.seq, self._arrivals)

    def put(self, job: JobRequest) -> None:
        """Add ``job``, or replace the job with its id (it moves to where it now sorts)."""
        old = self._by_id.get(job.id)
        if old is job:
            return
        if old is not None:
            self.drop(job.id)
        self._arrivals += 1
        self._count(job, 1)
        tenant, key = self._key(job)
        self._by_id[job.id] = job
        self._key_of[job.id] = (tenant, key)
        keys = self._keys.get(tenant)
        if keys is None:
            keys = self._keys[tenant] = []
            self._lists[tenant] = []
        _place(keys, self._lists[tenant], key, job)
        self._frozen.pop(tenant, None)
        self._frozen_keys.pop(tenant, None)
        if job.pending:
            if job.gpus_per_slice:
                rk = reason_key(job)
                self._shapes.setdefault(rk, {})[job.id] = job
                self._frozen_shapes.pop(rk, None)
                ak = alike_key(job)
                ids = self._alike.get(ak)
                if ids is None:
                    ids = self._alike[ak] = set()
                ids.add(job.id)
                self._frozen_alike.pop(ak, None)
                tk = (tenant, kind_of(job))
                kkeys, kjobs = self._kinds.setdefault(tk, ([], []))
                _place(kkeys, kjobs, key, job)
                self._frozen_kinds.pop(tk, None)
            else:
                self._cpu.add(job.id)
                self._frozen_cpu = None

    def drop(self, job_id: JobId) -> None:
        """Forget ``job_id`` (placed, cancelled, gone); nothing if it is not here."""
        job = self._by_id.pop(job_id, None)
        if job is None:
            return
        self._count(job, -1)
        tenant, key = self._key_of.pop(job_id)
        keys = self._keys[tenant]
        i = _find(keys, key)
        del keys[i]
        del self._lists[tenant][i]
        if not keys:
            del self._keys[tenant], self._lists[tenant]
        self._frozen.pop(tenant, None)
        self._frozen_keys.pop(tenant, None)
        if job.pending:
            if job.gpus_per_slice:
                rk = reason_key(job)
                group = self._shapes[rk]
                del group[job_id]
                if not group:
                    del self._shapes[rk]
                self._frozen_shapes.pop(rk, None)
                ak = alike_key(job)
                ids = self._alike[ak]
                ids.discard(job_id)
                if not ids:
                    del self._alike[ak]
                self._frozen_alike.pop(ak, None)
                tk = (tenant, kind_of(job))
                kkeys, kjobs = self._kinds[tk]
                i = _find(kkeys, key)
                del kkeys[i], kjobs[i]
                if not kkeys:
                    del self._kinds[tk]
                self._frozen_kinds.pop(tk, None)
            else:
                self._cpu.discard(job_id)
                self._frozen_cpu = None

    def rebase(self, policy: Policy, history: Mapping[str, float] | None = None) -> None:
        """Sort again for another policy or other learned runtimes (when they changed)."""
        if basis(policy, history) == self._basis and policy == self._policy:
            return
        jobs = list(self._by_id.values())
        self._reset(policy, history)
        self._load(jobs)

    def view(self) -> Ordered:
        """The jobs as they stand, for one pass. Copies only what changed since the last
        view: the sorted list of a tenant that changed, a reason group that changed."""
        for t, lst in self._lists.items():
            if t not in self._frozen:
                self._frozen[t] = tuple(lst)
            if t not in self._frozen_keys:
                self._frozen_keys[t] = tuple(self._keys[t])
        for tk, (kkeys, kjobs) in self._kinds.items():
            if tk not in self._frozen_kinds:
                self._frozen_kinds[tk] = (tuple(kkeys), tuple(kjobs))
        for rk, group in self._shapes.items():
            if rk not in self._frozen_shapes:
                self._frozen_shapes[rk] = (next(iter(group.values())), frozenset(group))
        for ak, ids in self._alike.items():
            if ak not in self._frozen_alike:
                self._frozen_alike[ak] = frozenset(ids)
        if self._frozen_cpu is None:
            self._frozen_cpu = frozenset(self._cpu)
        return Ordered(
            basis=self._basis,
            groups=dict(self._frozen),
            shapes=dict(self._frozen_shapes),
            cpu=self._frozen_cpu,
            size=len(self._by_id),
            keys=dict(self._frozen_keys),
            kinds=dict(self._frozen_kinds),
            single_type={t: g for t, g in self._single_type.items() if g},
            reading=self._reading,
            alike=dict(self._frozen_alike),
        )


def _first(row: tuple[_Key, JobRequest]) -> _Key:
    return row[0]


def _place(keys: list[_Key], jobs: list[JobRequest], key: _Key, job: JobRequest) -> None:
    """``job`` into ``jobs`` where ``key`` sorts in ``keys`` (kept side by side)."""
    if not keys or keys[-1] < key:  # most jobs sort last (submitted last): no search
        keys.append(key)
        jobs.append(job)
    else:
        i = bisect_left(keys, key)
        keys.insert(i, key)
        jobs.insert(i, job)


def _find(keys: list[_Key], key: _Key) -> int:
    """Where ``key`` (the very object) is in sorted ``keys``."""
    i = bisect_left(keys, key)
    if i >= len(keys) or keys[i] is not key:  # only if a key compares oddly (NaN)
        i = next(k for k, x in enumerate(keys) if x is key)
    return i
