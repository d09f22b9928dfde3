"""The waiting jobs kept from pass to pass (``apply.pending``, ``Gatherer``): a pass told
what changed looks at those jobs only, and gathers what a pass over every job would."""

from __future__ import annotations

import dataclasses

from orrery.ids import ClusterName, JobId, NodeName
from orrery.manifest import parse_manifest
from orrery_hub.apply.gather import Gatherer
from orrery_hub.apply.jobdb import JobEntry, OpenAttempt, SliceEntry
from orrery_hub.apply.queued import Gathered, QueuedJob
from orrery_hub.policy import EMPTY
from orrery_hub.scheduler import ClusterCapacity, NodeCapacity, Policy, Snapshot, plan

POLICY = Policy()


def entry(i: int, *, slices: int = 1, gpus: int = 8, gang: bool = True,
          not_before: float = 0.0, version: int = 0) -> JobEntry:
    m = parse_manifest(
        "apiVersion: orrery/v1\nkind: TrainingJob\n"
        f"metadata: {{name: j{i}}}\n"
        f"spec: {{slices: {slices}, gpusPerSlice: {gpus}, priority: {i % 3}, "
        f"restartPolicy: {'Gang' if gang else 'Slice'}, command: ['true']}}\n"
    )
    jid = f"j{i:05d}"
    return JobEntry(
        jid, "Pending", version, None, None,
        tuple(SliceEntry(k, "Pending", 1, not_before) for k in range(slices)),
        (), QueuedJob.new(jid, i, m),
    )


def same(a: Gathered, b: Gathered) -> None:
    assert sorted(a.requests, key=lambda r: r.id) == sorted(b.requests, key=lambda r: r.id)
    assert (a.versions, a.blocked, a.held) == (b.versions, b.blocked, b.held)


def full(entries: list[JobEntry], now: float) -> Gathered:
    return Gatherer().gather(entries, now=now, policies=EMPTY)


def test_a_pass_told_ten_changes_looks_at_ten_jobs() -> None:
    jobs = {e.id: e for e in (entry(i) for i in range(2000))}
    g = Gatherer()
    g.pending.update(jobs)
    first = g.gather(now=10.0, policies=EMPTY, policy=POLICY)
    same(first, full(list(jobs.values()), 10.0))
    assert first.order is not None and first.order.size == len(first.requests) == 2000

    # Ten changes: three placed (gone from the queue), five new, two with a slice back in
    # retry backoff after a failure.
    changes: dict[str, JobEntry | None] = {}
    for jid in list(jobs)[:3]:
        changes[jid] = None
    for i in range(2000, 2005):
        changes[f"j{i:05d}"] = entry(i)
    for jid in list(jobs)[10:12]:
        changes[jid] = dataclasses.replace(jobs[jid], version=1, slices=(
            SliceEntry(0, "Pending", 2, 30.0),
        ))
    for jid, e in changes.items():
        if e is None:
            del jobs[jid]
        else:
            jobs[jid] = e
    g.pending.update(changes)
    second = g.gather(now=11.0, policies=EMPTY, policy=POLICY)
    assert g.pending.touched == set(changes)
    same(second, full(list(jobs.values()), 11.0))
    assert second.blocked[list(changes)[-1]] == "retry backoff: 19.0s left"
    # Jobs that did not change keep their request (the same object, in the same order).
    kept = {r.id: r for r in first.requests}
    assert sum(1 for r in second.requests if kept.get(r.id) is r) == 2000 - 3 - 2
    assert second.order is not None and second.order.size == len(second.requests)

    # Nothing changed, but a backoff ran out: those two are offered again.
    third = g.gather(now=31.0, policies=EMPTY, policy=POLICY)
    assert g.pending.touched == set(list(changes)[-2:])
    same(third, full(list(jobs.values()), 31.0))
    assert not third.blocked


def test_the_kept_order_plans_as_a_fresh_sort_does() -> None:
    entries = [entry(i, slices=1 + i % 3, gpus=4 * (1 + i % 2), gang=i % 4 != 0)
               for i in range(300)]
    g = Gatherer()
    g.pending.update({e.id: e for e in entries})
    got = g.gather(now=1.0, policies=EMPTY, policy=POLICY)
    clusters = tuple(
        ClusterCapacity(
            ClusterName(f"c{c}"),
            {},
            True,
            tuple(
                NodeCapacity(NodeName(f"n{n}"), "H100", 8, tuple(range(8))) for n in range(4)
            ),
        )
        for c in range(3)
    )
    kept = plan(Snapshot(clusters, got.requests, order=got.order), 1.0)
    fresh = plan(Snapshot(clusters, got.requests), 1.0)
    assert kept.placements == fresh.placements
    assert {j: w.summary for j, w in kept.waiting.items()} == {
        j: w.summary for j, w in fresh.waiting.items()
    }
    assert JobId("j00002") in {p.job for p in kept.placements}  # priority 2 first


def test_an_open_attempt_holds_its_slice_back() -> None:
    e = entry(1, slices=2, gang=False)
    stopping = OpenAttempt(0, 1, "c0", "n0", (0, 1), 0.0, None, None)
    e = dataclasses.replace(e, attempts=(stopping,))
    g = Gatherer()
    g.pending.update({e.id: e})
    got = g.gather(now=1.0, policies=EMPTY, holding=[e])
    assert got.blocked == {e.id: "waiting for slice 0 epoch 1 to stop on c0"}
    assert [r.pending for r in got.requests] == [(1,)]
    assert got.held == {("c0", "n0"): {0, 1}}
    same(got, full([e], 1.0))


def test_with_policies_unchanged_answers_keep_their_requests_and_order() -> None:
    from tests.hub.test_policy_helpers import FLEET, policies

    rules = policies("Placement no-ap: {forbid: {clusters: ['ap-*']}}")
    jobs = {e.id: e for e in (entry(i) for i in range(500))}
    g = Gatherer()
    g.pending.update(jobs)
    first = g.gather(now=1.0, policies=rules, clusters=FLEET, policy=POLICY)
    fresh = Gatherer().gather(list(jobs.values()), now=1.0, policies=rules, clusters=FLEET)
    same(first, fresh)
    assert all(r.allowed_clusters is not None and "ap-south-1" not in r.allowed_clusters
               for r in first.requests)
    assert first.order is not None and first.order.size == len(first.requests) == 500

    gone = list(jobs)[:5]
    for jid in gone:
        del jobs[jid]
    g.pending.update(dict.fromkeys(gone))
    second = g.gather(now=2.0, policies=rules, clusters=FLEET, policy=POLICY)
    same(second, Gatherer().gather(list(jobs.values()), now=2.0, policies=rules,
                                   clusters=FLEET))
    kept = {r.id: r for r in first.requests}
    assert all(kept[r.id] is r for r in second.requests)  # the same answers, the same objects
    assert second.order is not None and second.order.size == 495
    clusters = tuple(
        ClusterCapacity(ClusterName(f.name), dict(f.labels), True,
                        (NodeCapacity(NodeName("n0"), "H100", 8, tuple(range(8))),))
        for f in FLEET
    )
    a = plan(Snapshot(clusters, second.requests, order=second.order), 2.0)
    b = plan(Snapshot(clusters, second.requests), 2.0)
    assert a.placements == b.placements and a.placements
