"""The discrete-event loop: arrivals, scheduling passes, completions and preemptions in
simulated time, driving ``orrery_hub.scheduler.plan`` and the slice lifecycle
(``orrery_hub.lifecycle.on_attempt_end``) exactly as the hub does. Called by
``cli`` and the tests; no sleeps, no clock, no IO.

Events at the same instant are handled together, then one pass runs if anything changed
and a job waits — but no sooner than ``pass_interval`` after the last pass, as the hub's
reconcile loop would. A preempted job stops ``grace`` seconds after its order, loses the
work since its last periodic checkpoint, and is requeued with its original submission
order. Everything is ordered by (time, sequence), so the same inputs give the same run.
"""

from __future__ import annotations

import heapq
import math
import zlib
from dataclasses import dataclass, field, replace

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.lifecycle import AttemptEnd, JobState, SliceState, on_attempt_end
from orrery_hub.scheduler import (
    ClusterCapacity,
    JobRequest,
    NodeCapacity,
    Policy,
    RunningJob,
    RunningSlice,
    Snapshot,
    plan,
)
from orrery_hub.scheduler.fairness import jain, max_min_shares
from orrery_hub.scheduler.waitlist import WaitList
from orrery_hub.sim.datasets import DataWorld
from orrery_hub.sim.fleet import Fleet
from orrery_hub.sim.trace import TraceJob

POLICIES: dict[str, Policy] = {
    "fifo": Policy(fifo=True),  # first fit: a job that fits skips those that do not
    "strict-fifo": Policy(fifo=True, head_of_line=True),
    "priority": Policy(),
    "fair": Policy(fair_share=True, quotas=True, backfill=True),
    "orrery": Policy.full(),
}

ARRIVE, PASS, FINISH, STOPPED = 0, 1, 2, 3
MAX_RETRIES = 3  # traces hold no workload failures: only successes and preemptions


def _no_backoff(_failures: int) -> float:
    return 0.0


class _Job:
    __slots__ = (
        "attempts", "end", "epoch", "first_start", "preempted", "priority", "queue",
        "remaining", "request", "run", "slices", "tj", "wait",
    )

    def __init__(self, tj: TraceJob, queue: str, team: str, priority: int, seq: int,
                 submit: float, slack: float) -> None:
        self.tj = tj
        self.queue = queue
        self.priority = priority
        self.remaining = tj.duration
        self.first_start: float | None = None
        self.end: float | None = None
        self.epoch = 0
        self.attempts = 0
        self.preempted = 0
        self.run: RunningJob | None = None
        self.slices: tuple[RunningSlice, ...] = ()
        self.request = JobRequest(
            id=JobId(tj.name), name=tj.name, priority=priority, seq=seq,
            gpus_per_slice=tj.gpus, gpu_types=tj.gpu_types, pending=(SliceIndex(0),),
            gang=True, queue=queue, labels={"team": team},
            max_runtime=tj.duration * slack,
        )
        self.wait = submit  # submission time, scaled


@dataclass
class Result:
    """What one policy's run produced; ``report`` turns it into figures."""

    policy: str
    gpus: int
    first_submit: float
    last_submit: float
    finished: list[tuple[float, float, float, bool]] = field(default_factory=list)
    # The trace's service time of each finished uncensored job, summed: no policy's mean
    # JCT can go below their mean (the work itself, with no wait and nothing lost).
    service_seconds: float = 0.0
    # (submit, first start, end, censored) per finished job
    used_series: list[tuple[float, int]] = field(default_factory=list)
    busy_gpu_seconds: float = 0.0
    busy_gpu_seconds_arrivals: float = 0.0
    jain_weighted: float = 0.0  # integral of Jain's index over contended time
    contended_seconds: float = 0.0
    preemptions: int = 0
    lost_gpu_seconds: float = 0.0
    passes: int = 0
    events: int = 0
    end: float = 0.0
    rounded_fractional: int = 0
    data_wait_gpu_seconds: float = 0.0  # GPUs held while their job's data staged
    has_data: bool = False  # the fleet declares datasets: the summary reports the above


class Engine:
    def __init__(self, jobs: tuple[TraceJob, ...], fleet: Fleet, policy_name: str) -> None:
        self.policy = POLICIES[policy_name]
        self.name = policy_name
        self.fleet = fleet
        spec = fleet.spec
        self.ci = spec.checkpoint_interval
        self.slack = spec.runtime_slack
        self.grace = spec.grace
        self.policy = replace(self.policy, grace_s=self.grace)
        self.queues = {q.name for q in fleet.queues}
        self.weights = {q.name: q.weight for q in fleet.queues}
        self.guaranteed = {q.name: float(q.guaranteed) for q in fleet.queues
                           if q.guaranteed is not None}
        # Free GPU indices per node, and the capacity the scheduler sees, rebuilt per
        # cluster only when that cluster changed.
        self.free: dict[tuple[ClusterName, NodeName], list[int]] = {}
        self.types: dict[tuple[ClusterName, NodeName], str] = {}
        self.sizes: dict[tuple[ClusterName, NodeName], int] = {}
        self.order: dict[ClusterName, list[NodeName]] = {}
        for c, nodes in fleet.clusters.items():
            cn = ClusterName(c)
            self.order[cn] = []
            for n in nodes:
                key = (cn, NodeName(n.name))
                self.free[key] = list(range(n.gpus))
                self.types[key] = n.model
                self.sizes[key] = n.gpus
                self.order[cn].append(NodeName(n.name))
        self.caps: dict[ClusterName, ClusterCapacity] = {}
        self.dirty: set[ClusterName] = set(self.order)
        self.jobs: dict[str, _Job] = {}
        self.pending: dict[str, _Job] = {}
        self.waitlist = WaitList(self.policy)  # the pending jobs, in offer order
        self.running: dict[str, _Job] = {}
        self.heap: list[tuple[float, int, int, str, int]] = []
        self._n = 0
        scale = spec.arrival_scale
        for seq, tj in enumerate(jobs):
            queue = tj.qos if tj.qos in self.queues else next(iter(sorted(self.queues)))
            team = f"team{zlib.crc32(f'{spec.seed}:{tj.name}'.encode()) % spec.teams}"
            submit = tj.submit / scale
            j = _Job(tj, queue, team, fleet.priorities.get(queue, 0), seq, submit, self.slack)
            self.jobs[tj.name] = j
            self._push(submit, ARRIVE, tj.name, 0)
        first = min((j.wait for j in self.jobs.values()), default=0.0)
        last = max((j.wait for j in self.jobs.values()), default=0.0)
        self.result = Result(policy_name, fleet.gpus, first, last)
        self.result.rounded_fractional = sum(1 for tj in jobs if tj.fractional)
        self.used = 0
        self.last_t = first
        self.last_pass = -math.inf
        self.pass_at: float | None = None
        self.jain_now: float | None = None
        self.data: DataWorld | None = None
        if spec.datasets:
            self.data = DataWorld(
                spec.datasets, spec.links, spec.regions, seed=spec.seed,
                delay_cost=spec.delay_cost_per_gpu_hour, grace_s=self.grace,
            )
            for j in self.jobs.values():
                j.request = replace(j.request, datasets=self.data.reads(j.tj.name))
            self.result.has_data = True

    def _push(self, t: float, kind: int, job: str, epoch: int) -> None:
        self._n += 1
        heapq.heappush(self.heap, (t, self._n, kind, job, epoch))

    # --- the loop -----------------------------------------------------------------------

    def run(self) -> Result:
        r = self.result
        while self.heap:
            t = self.heap[0][0]
            self._advance(t)
            changed = False
            while self.heap and self.heap[0][0] == t:
                _, _, kind, name, epoch = heapq.heappop(self.heap)
                r.events += 1
                if kind == PASS:
                    self.pass_at = None
                    changed = True
                else:
                    changed |= self._event(kind, self.jobs[name], epoch, t)
            if changed and self.pending:
                # The same sum as pass_at below: `t - last >= interval` can miss by a
                # rounding error at t == last + interval, and the PASS event it then pushes
                # for that same instant would come back forever.
                if t >= self.last_pass + self.fleet.spec.pass_interval:
                    self._pass(t)
                elif self.pass_at is None:
                    self.pass_at = self.last_pass + self.fleet.spec.pass_interval
                    self._push(self.pass_at, PASS, "", 0)
        r.end = self.last_t
        return r

    def _advance(self, t: float) -> None:
        dt = t - self.last_t
        if dt > 0:
            r = self.result
            r.busy_gpu_seconds += self.used * dt
            lo, hi = max(self.last_t, r.first_submit), min(t, r.last_submit)
            if hi > lo:
                r.busy_gpu_seconds_arrivals += self.used * (hi - lo)
            if self.jain_now is not None:
                r.jain_weighted += self.jain_now * dt
                r.contended_seconds += dt
        self.last_t = t

    def _event(self, kind: int, j: _Job, epoch: int, t: float) -> bool:
        if kind == ARRIVE:
            self.pending[j.tj.name] = j
            self.waitlist.put(j.request)
            return True
        if epoch != j.epoch:
            return False  # a completion for an attempt that was preempted meanwhile
        assert j.run is not None
        # The hub's own lifecycle decides what the ending means (orrery_hub.lifecycle).
        cluster = j.slices[0].cluster if j.slices else ""
        step = on_attempt_end(
            JobState(j.tj.name, "Running", max_retries=MAX_RETRIES),
            (SliceState(0, "Running", epoch, cluster=cluster),),
            AttemptEnd(0, epoch, cluster, preempted_for=j.run.preempted_for),
            "Succeeded" if kind == FINISH else "Killed",
            None if kind == FINISH else "platform",
            t,
            _no_backoff,
        )
        if step.job.phase == "Succeeded":
            self._release(j, t)
            j.end = t
            start = j.first_start if j.first_start is not None else t
            self.result.finished.append((j.wait, start, t, j.tj.censored))
            if not j.tj.censored:
                self.result.service_seconds += j.tj.duration
            return True
        assert step.requeued, step  # preempted: the platform's doing, requeued at once
        # The preempted attempt has exited; requeue from its last checkpoint.
        done = math.floor(max(0.0, self._ordered_at(j) - j.run.started_at) / self.ci) * self.ci
        self.result.lost_gpu_seconds += (self._ordered_at(j) - j.run.started_at - done) * j.tj.gpus
        j.remaining = max(1.0, j.remaining - done)
        self._release(j, t)
        j.epoch += 1
        j.request = replace(j.request, max_runtime=j.remaining * self.slack)
        self.pending[j.tj.name] = j
        self.waitlist.put(j.request)
        return True

    def _ordered_at(self, j: _Job) -> float:
        # The stop order went out a grace period before the attempt stopped.
        return self.last_t - self.grace

    def _release(self, j: _Job, t: float) -> None:
        for s in j.slices:
            key = (s.cluster, s.node)
            self.free[key].extend(s.gpus)
            self.free[key].sort()
            self.dirty.add(s.cluster)
            self.used -= len(s.gpus)
        self._note_used(t)
        j.slices = ()
        j.run = None
        self.running.pop(j.tj.name, None)

    def _note_used(self, t: float) -> None:
        series = self.result.used_series
        if series and series[-1][0] == t:
            series[-1] = (t, self.used)
        else:
            series.append((t, self.used))

    # --- one scheduling pass ------------------------------------------------------------

    def _clusters(self) -> tuple[ClusterCapacity, ...]:
        for c in self.dirty:
            region = self.data.region(c) if self.data is not None else None
            self.caps[c] = ClusterCapacity(
                name=c, labels={"region": region} if region else {}, ready=True,
                nodes=tuple(
                    NodeCapacity(n, self.types[(c, n)], self.sizes[(c, n)],
                                 tuple(self.free[(c, n)]))
                    for n in self.order[c]
                ),
            )
        self.dirty.clear()
        return tuple(self.caps[c] for c in sorted(self.caps))

    def _running_view(self, t: float) -> tuple[RunningJob, ...]:
        out = []
        for j in self.running.values():
            assert j.run is not None
            if not j.run.stopping:
                ck = j.run.started_at + math.floor((t - j.run.started_at) / self.ci) * self.ci
                if ck != j.run.last_checkpoint_at:
                    j.run = replace(j.run, last_checkpoint_at=ck)
            out.append(j.run)
        return tuple(out)

    def _pass(self, t: float) -> None:
        r = self.result
        r.passes += 1
        self.last_pass = t
        snap = Snapshot(
            clusters=self._clusters(),
            jobs=self.waitlist.jobs(),
            running=self._running_view(t),
            queues=self.fleet.queues,
            policy=self.policy,
            data=self.data.policy() if self.data is not None else None,
            order=self.waitlist.view(),  # kept sorted from pass to pass, as the hub's jobdb
        )
        p = plan(snap, t)
        by_job: dict[str, list[RunningSlice]] = {}
        for pl in p.placements:
            key = (pl.cluster, pl.node)
            free = self.free[key]
            for g in pl.gpus:
                free.remove(g)
            self.dirty.add(pl.cluster)
            by_job.setdefault(pl.job, []).append(
                RunningSlice(pl.index, pl.cluster, pl.node, pl.gpus)
            )
        for name, slices in by_job.items():
            j = self.pending.pop(name)
            self.waitlist.drop(j.request.id)
            j.slices = tuple(slices)
            j.attempts += 1
            if j.first_start is None:
                j.first_start = t
            j.run = RunningJob(
                id=j.request.id, queue=j.queue, priority=j.priority, slices=j.slices,
                started_at=t, last_checkpoint_at=t, max_runtime=j.remaining * self.slack,
                labels=j.request.labels,
            )
            self.running[name] = j
            self.used += sum(len(s.gpus) for s in slices)
            staging = 0.0
            if self.data is not None and j.request.datasets:
                # Its GPUs are held while its data stages; the work starts after.
                staging = self.data.stage(j.request.datasets, slices[0].cluster)
                r.data_wait_gpu_seconds += staging * j.tj.gpus
            self._push(t + staging + j.remaining, FINISH, name, j.epoch)
        if by_job:
            self._note_used(t)
        for pre in p.preemptions:
            v = self.jobs[pre.victim]
            if v.run is None or v.run.stopping:
                continue
            v.run = replace(v.run, stopping=True, preempted_for=pre.for_job)
            v.preempted += 1
            r.preemptions += 1
            v.epoch += 1  # its FINISH event no longer counts
            self._push(t + self.grace, STOPPED, pre.victim, v.epoch)
        self._measure_fairness()

    def _measure_fairness(self) -> None:
        """Jain's index, held until the next pass, of each queue's GPUs over its fair
        share: its guarantee, then weighted max-min of the rest of the fleet's GPUs, capped
        by what the queue demands (what it runs plus what it waits for), over every queue
        with demand. None (not
        counted) while fewer than two queues wait."""
        demand: dict[str, float] = {}
        for j in self.pending.values():
            demand[j.queue] = demand.get(j.queue, 0.0) + j.tj.gpus
        if len(demand) < 2:
            self.jain_now = None
            return
        alloc: dict[str, float] = {}
        for j in self.running.values():
            alloc[j.queue] = alloc.get(j.queue, 0.0) + j.tj.gpus
        for q, a in alloc.items():
            demand[q] = demand.get(q, 0.0) + a
        fair = max_min_shares(demand, self.weights, self.result.gpus, self.guaranteed)
        self.jain_now = jain(alloc.get(q, 0.0) / fair[q] for q in sorted(fair) if fair[q] > 0)


def simulate(jobs: tuple[TraceJob, ...], fleet: Fleet, policy: str) -> Result:
    return Engine(jobs, fleet, policy).run()
