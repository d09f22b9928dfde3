"""The pass's shortcuts plan exactly what the plain searches they replace plan: the same
placements, preemptions, reservations and reasons, on random crowded fleets of several
clusters. The plain searches live here, as a reference pass:

* placing: every eligible cluster asked how many slices fit, then ``cycle._choose``
  (the pass asks ``ranked`` for the tightest cluster that holds the job whole);
* shadow times and reservations: one ``backfill.shadow`` per eligible cluster over its
  own releases (the pass walks the fleet's releases once, ``backfill.earliest``);
* every job searched (the pass answers a job alike to one that failed from memory)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orrery.ids import ClusterName, JobId, SliceIndex
from orrery_hub.scheduler import (
    JobRequest,
    Plan,
    Policy,
    QueueConfig,
    RunningJob,
    Snapshot,
    backfill,
    plan,
)
from orrery_hub.scheduler.cycle import _choose, _Pass
from orrery_hub.scheduler.fit import ClusterFit
from orrery_hub.scheduler.plan import Reservation
from orrery_hub.scheduler.waitlist import WaitList
from tests.hub.test_scheduler_helpers import fleet, running

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
QUEUES = (
    QueueConfig("A", weight=2, guaranteed=10, cohort="all"),
    QueueConfig("B", weight=1, guaranteed=6, cohort="all"),
)
POLICIES = [
    Policy(),
    Policy(backfill=True),
    Policy(preemption=True, backfill=True),
    Policy(fair_share=True, quotas=True, backfill=True),
    Policy.full(),
    replace(Policy.full(), preempt_for_gain=False, preemption_attempts=4),
    replace(Policy.full(), type_aware=False),
]
CLUSTERS = [ClusterName(f"c{i}") for i in range(4)]


class _Reference(_Pass):
    """The pass with the plain searches (see the module doc), every job searched."""

    remember_failures = False

    def _chosen(
        self, job: JobRequest, n: int, prefer: list[frozenset[str]]
    ) -> list[tuple[ClusterFit, int]]:
        candidates = [
            (c, k)
            for c in self._eligible(job)
            if (k := c.slices_fit(job.gpus_per_slice, job.gpu_types)) > 0
        ]
        return _choose(job, n, candidates, prefer)

    def _plain_releases(self, cluster: ClusterName) -> list[backfill.Release]:
        rel: list[backfill.Release] = []
        for r in self.running:
            end = r.expected_end(self.now, self.policy.grace_s)
            rel.extend((end, s.node, len(s.gpus)) for s in r.slices
                       if s.cluster == cluster and s.gpus)
        rel.sort()
        return rel

    def _fits_at(self, job: JobRequest, n: int) -> float:
        if not job.gang:
            n = 1
        best = float("inf")
        for fit in self._eligible(job):
            sh = backfill.shadow(fit, self._plain_releases(fit.name), n,
                                 job.gpus_per_slice, job.gpu_types, self.now)
            if sh is not None:
                best = min(best, sh.start_at)
        return best

    def _reserve(self, job: JobRequest, n: int) -> Reservation | None:
        g = job.gpus_per_slice
        if not job.gang:
            n = 1
        best: backfill.Shadow | None = None
        for fit in self._eligible(job):
            sh = backfill.shadow(fit, self._plain_releases(fit.name), n, g, job.gpu_types,
                                 self.now)
            if sh is not None and (
                best is None or (sh.start_at, sh.cluster) < (best.start_at, best.cluster)
            ):
                best = sh
        if best is None or not best.nodes:
            return None
        self._hold(self.by_name[best.cluster], list(best.nodes), best.start_at)
        res = Reservation(job.id, best.cluster, best.nodes, best.start_at)
        self.reservations.append(res)
        return res


def _reference(snap: Snapshot, now: float) -> Plan:
    return _Reference(snap, now).run()


@st.composite
def _crowded(draw: st.DrawFn) -> tuple[dict[str, list[int]], list[RunningJob]]:
    """Up to four clusters of 2-8 GPU nodes, mostly busy with jobs of several priorities,
    queues and ends: some already past their end, some with none, some stopping."""
    sizes = st.lists(st.sampled_from([2, 4, 8]), min_size=1, max_size=4)
    shape: dict[str, list[int]] = {
        c: draw(sizes) for c in CLUSTERS[: draw(st.integers(1, 4))]
    }
    busy: list[RunningJob] = []
    for c, nodes in shape.items():
        for ni, size in enumerate(nodes):
            left = size - draw(st.sampled_from([0, 0, 1, 2, 4]))
            while left > 0:
                g = draw(st.integers(1, left))
                left -= g
                busy.append(running(
                    f"r{len(busy)}", on=[(c, f"n{ni}", g)], priority=draw(st.integers(0, 3)),
                    queue=draw(st.sampled_from(["A", "B"])),
                    started=float(draw(st.integers(0, 50))),
                    checkpoint=float(draw(st.integers(0, 100))),
                    max_runtime=draw(st.sampled_from([None, 10.0, 60.0, 120.0, 300.0])),
                    stopping=draw(st.booleans()) and draw(st.booleans()),
                ))
    return shape, busy


@st.composite
def _jobs(draw: st.DrawFn) -> list[JobRequest]:
    out = []
    for i in range(draw(st.integers(1, 30))):
        allowed = draw(st.sampled_from([None, None, frozenset(CLUSTERS[:2])]))
        out.append(JobRequest(
            id=JobId(f"j{i}"), name=f"j{i}", priority=draw(st.integers(0, 4)),
            seq=draw(st.integers(0, 20)),
            gpus_per_slice=draw(st.sampled_from([1, 1, 2, 4, 8])),
            gpu_types=draw(st.sampled_from([None, None, frozenset({"A100"})])),
            pending=tuple(SliceIndex(k) for k in range(draw(st.sampled_from([1, 1, 2, 3])))),
            gang=draw(st.booleans()), queue=draw(st.sampled_from(["A", "B"])),
            allowed_clusters=allowed,
            cluster_scores=draw(st.sampled_from([{}, {}, {CLUSTERS[1]: 1.0}])),
            max_runtime=draw(st.sampled_from([None, 5.0, 30.0, 300.0])),
        ))
    return out


@SETTINGS
@given(_crowded(), _jobs(), st.sampled_from(POLICIES), st.booleans(),
       st.sampled_from([0.0, 40.0, 100.0]))
def test_the_shortcuts_plan_what_the_plain_searches_plan(  # type: ignore[no-untyped-def]
    fl, js, policy, kept, now
) -> None:
    _same_plans(fl, js, policy, kept, now)


def _same_plans(
    fl: tuple[dict[str, list[int]], list[RunningJob]],
    js: list[JobRequest],
    policy: Policy,
    kept: bool,
    now: float,
) -> None:
    shape, busy = fl
    clusters, run_ = fleet(shape, busy)
    # Odd clusters of another type: type-aware placement has a choice to make.
    clusters = tuple(
        c if int(c.name[1:]) % 2 == 0 else replace(
            c, nodes=tuple(replace(nd, gpu_type="A100") for nd in c.nodes))
        for c in clusters
    )
    snap = Snapshot(clusters, tuple(js), run_, QUEUES, policy)
    if kept:
        snap = replace(snap, order=WaitList(policy, None, snap.jobs).view())
    got = plan(snap, now)
    assert got == _reference(snap, now)
    # Each waiting job once: reasons told a kind or shape at once (``WaitReasons.groups``)
    # hold no job that has a reason of its own, nor a job of another group.
    assert len(list(got.waiting)) == len(set(got.waiting)) == len(got.waiting)


@st.composite
def _alike_jobs(draw: st.DrawFn) -> list[JobRequest]:
    """Many jobs of a few kinds (a sweep): copies of up to four drawn jobs, each with its
    own id and place in the order."""
    kinds = draw(_jobs())[:4]
    return [
        replace(draw(st.sampled_from(kinds)), id=JobId(f"s{i}"), name=f"s{i}",
                seq=draw(st.integers(0, 40)))
        for i in range(draw(st.integers(2, 40)))
    ]  # fmt: skip


class _Counting(_Pass):
    searched = 0
    offered = 0

    def _search(self, job: JobRequest, n: int) -> None:
        type(self).searched += 1
        super()._search(job, n)

    def _one(self, job: JobRequest) -> None:
        type(self).offered += 1
        super()._one(job)


@SETTINGS
@given(_crowded(), _alike_jobs(), st.sampled_from(POLICIES), st.booleans(),
       st.sampled_from([0.0, 40.0, 100.0]))
def test_jobs_alike_to_one_that_failed_are_told_what_a_search_would_tell(  # type: ignore[no-untyped-def]
    fl, js, policy, kept, now
) -> None:
    _same_plans(fl, js, policy, kept, now)


def test_a_queue_that_fits_nowhere_is_searched_once_per_kind() -> None:
    """A thousand jobs for a GPU type no cluster has, while the fleet's GPUs sit free:
    one search, the rest told the same reason."""
    from tests.hub.test_scheduler_helpers import job

    clusters, run_ = fleet({"c0": [8, 8]}, [])
    jobs = tuple(job(f"j{i}", gpus=1, gpu_type="NONE") for i in range(1000))
    for policy in (Policy(), Policy.full()):
        for kept in (False, True):
            snap = Snapshot(clusters, jobs, run_, QUEUES, policy)
            if kept:
                snap = replace(snap, order=WaitList(policy, None, snap.jobs).view())
            _Counting.searched = _Counting.offered = 0
            out = _Counting(snap, 0.0).run()
            assert _Counting.searched == 1
            # With the order kept, the walk ends once every kind left is known to fail.
            assert _Counting.offered == (1 if kept else 1000)
            assert out == _reference(snap, 0.0)
            assert len(out.waiting) == 1000
            assert len({r.summary for r in out.waiting.values()}) == 1


def test_the_walk_ends_early_only_once_every_kind_left_has_failed() -> None:
    """Jobs that fit nowhere, then one that fits, one too big for what is left, then more
    that fit nowhere: the walk goes on to the one that fits and places it, and the jobs
    after it are searched again (a placement changes what they see) before their kind is
    written off."""
    from tests.hub.test_scheduler_helpers import job

    clusters, run_ = fleet({"c0": [8]}, [])
    jobs = (
        *[job(f"a{i}", gpus=1, gpu_type="NONE") for i in range(50)],
        job("fits", gpus=4),
        job("big", gpus=8),
        *[job(f"b{i}", gpus=1, gpu_type="NONE") for i in range(50)],
    )
    policy = Policy()
    snap = Snapshot(clusters, jobs, run_, QUEUES, policy)
    snap = replace(snap, order=WaitList(policy, None, snap.jobs).view())
    _Counting.searched = _Counting.offered = 0
    out = _Counting(snap, 0.0).run()
    assert out == _reference(snap, 0.0)
    assert [p.job for p in out.placements] == ["fits"]
    assert len(out.waiting) == 101
    # a0, fits, big, b0 searched; then every kind with jobs left has failed since the
    # placement: b1... are told b0's reason without a walk.
    assert _Counting.searched == 4
    assert _Counting.offered == 53


def test_the_reservation_goes_to_the_first_cluster_by_name_among_equal_times() -> None:
    """Two clusters free a whole node at t=50, one by a job that ends then, the other by
    one past its end at t=50 (its end counts as now): both searches find t=50 and hold
    the first cluster by name, whatever order the fleet's releases come in."""
    from tests.hub.test_scheduler_helpers import job

    clusters, run_ = fleet({"c1": [4, 1], "c0": [4]}, [
        running("a", on=[("c1", "n0", 4)], max_runtime=50.0),
        running("b", on=[("c0", "n0", 4)], started=-10.0, max_runtime=20.0),
    ])
    for order in (run_, run_[::-1]):
        snap = Snapshot(clusters, (job("one", gpus=4), job("w", gpus=4)), order, (),
                        Policy(backfill=True))
        p = plan(snap, 50.0)
        assert p == _reference(snap, 50.0)
        assert [(r.job, r.cluster, r.start_at) for r in p.reservations] == [
            ("one", "c0", 50.0)]


class _Looking(_Pass):
    looked = 0

    def _rest_known(self) -> tuple[bool, int]:
        done, looked = super()._rest_known()
        type(self).looked += looked
        return done, looked


def test_checking_whether_the_walk_may_end_costs_at_most_the_walk() -> None:
    """Every job its own kind (the simulator gives each its own runtime), none placeable,
    GPUs free: a check after each failure would look at every kind each time (quadratic:
    4,000 jobs took 1.3 s). Checks are paced to cost no more than the walk."""
    from tests.hub.test_scheduler_helpers import job

    clusters, run_ = fleet({"c0": [8, 8]}, [])
    n = 2000
    jobs = tuple(job(f"j{i}", gpu_type="NONE", max_runtime=float(i + 1)) for i in range(n))
    policy = Policy(fifo=True)
    snap = Snapshot(clusters, jobs, run_, QUEUES, policy)
    snap = replace(snap, order=WaitList(policy, None, snap.jobs).view())
    _Looking.looked = 0
    out = _Looking(snap, 0.0).run()
    assert out == _reference(snap, 0.0)
    assert len(out.waiting) == n
    assert _Looking.looked <= 3 * n
