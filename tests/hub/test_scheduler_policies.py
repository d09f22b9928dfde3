"""Fair share, quotas with borrowing and reclaim, preemption, backfill and topology, each on
a small hand-made case with the expected placement spelled out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orrery.ids import NodeName
from orrery_hub.scheduler import Policy, QueueConfig, Snapshot, plan
from tests.hub.test_scheduler_helpers import (
    fleet,
    gpus_by_queue,
    job,
    jobs,
    placed,
    run,
    running,
    victims,
)

FAIR = Policy(fair_share=True)
QUOTA = Policy(quotas=True)
QUOTA_PREEMPT = Policy(quotas=True, preemption=True)
PREEMPT = Policy(preemption=True)
BACKFILL = Policy(backfill=True)
COHORT_4_4 = [QueueConfig("A", guaranteed=4, cohort="c"),
              QueueConfig("B", guaranteed=4, cohort="c")]

# --- fair share ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "policy", "weights", "held", "expect"),
    [
        # Today's behaviour: priority then submission; A came first and takes all 8.
        ("default order", Policy(), {}, {}, {"A": 8}),
        ("equal weights split evenly", FAIR, {"A": 1, "B": 1}, {}, {"A": 4, "B": 4}),
        ("weights 3:1", FAIR, {"A": 3, "B": 1}, {}, {"A": 6, "B": 2}),
        # A already holds 4 GPUs elsewhere: B, having used less, gets the next ones first.
        ("the queue that used less goes first", FAIR, {}, {"A": 4}, {"A": 2, "B": 6}),
    ],
)
def test_fair_share(case: str, policy: Policy, weights: dict[str, float],
                    held: dict[str, int], expect: dict[str, int]) -> None:
    waiting = jobs(32, queue="A") + jobs(32, queue="B")
    # What a queue already holds sits on a separate, full cluster "old"; c1's 8 are free.
    busy = [running(f"{q}-old", queue=q, on=[("old", "n0", n)]) for q, n in held.items()]
    shape = {"c1": [8], **({"old": [sum(held.values())]} if held else {})}
    p = run(shape, waiting, busy=busy, policy=policy,
            queues=[QueueConfig(q, weight=w) for q, w in weights.items()])
    assert gpus_by_queue(p, waiting) == expect, case


def test_fair_share_between_teams_within_a_queue() -> None:
    waiting = jobs(8, queue="A", prefix="nlp", team="nlp") + jobs(8, queue="A", prefix="cv",
                                                                  team="cv")
    p = run({"c1": [4]}, waiting, policy=Policy(fair_share=True, tenant="team"))
    assert placed(p) == {"nlp-0", "nlp-1", "cv-0", "cv-1"}


def test_across_queues_share_outranks_priority() -> None:
    # A's jobs all outrank B's, yet with fair share each queue gets half: priority orders
    # jobs within a queue, not queues (else B's short jobs would wait out all of A's).
    waiting = jobs(8, queue="A", priority=10) + jobs(8, queue="B")
    p = run({"c1": [8]}, waiting, policy=FAIR)
    assert gpus_by_queue(p, waiting) == {"A": 4, "B": 4}


@pytest.mark.parametrize(
    ("case", "held", "expect_victims"),
    [
        # A holds 2 of 8 and B 6: evicting one B job leaves A at 3, B at 5: fairer.
        ("towards fairness", {"A": 2, "B": 6}, {"B-0"}),
        # A holds 6 and B 2: A would grow to 7, past B's 2. Priority does not buy that.
        ("away from fairness", {"A": 6, "B": 2}, set()),
    ],
)
def test_cross_queue_priority_preemption_only_towards_fairness(
    case: str, held: dict[str, int], expect_victims: set[str]
) -> None:
    # A's own jobs share its priority (within a queue, priority alone would decide).
    busy = [running(f"{q}-{i}", queue=q, on=[("c1", "n0", 1)], checkpoint=100 - i,
                    priority=10 if q == "A" else 0)
            for q, n in held.items() for i in range(n)]
    p = run({"c1": [8]}, [job("hi", queue="A", priority=10)], busy=busy,
            policy=Policy(fair_share=True, preemption=True), now=100)
    assert victims(p) == expect_victims, case


def test_within_a_queue_priority_then_submission() -> None:
    low = jobs(4, queue="A", prefix="low")
    high = jobs(2, queue="A", prefix="high", priority=10)
    p = run({"c1": [4]}, low + high, policy=FAIR)
    assert placed(p) == {"high-0", "high-1", "low-0", "low-1"}


# --- quotas, borrowing, reclaim ------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "queues", "expect_a"),
    [
        ("no quota: A takes all", [], 8),
        ("guarantee 4, no cohort: capped at 4", [QueueConfig("A", guaranteed=4)], 4),
        ("cohort: A borrows B's idle guarantee",
         [QueueConfig("A", guaranteed=4, cohort="c"), QueueConfig("B", guaranteed=4, cohort="c")],
         8),
        ("cohort with a borrow limit of 2",
         [QueueConfig("A", guaranteed=4, cohort="c", borrow_limit=2),
          QueueConfig("B", guaranteed=4, cohort="c")],
         6),
        ("cohort lends only its members' guarantees",
         [QueueConfig("A", guaranteed=2, cohort="c"), QueueConfig("B", guaranteed=3, cohort="c")],
         5),
    ],
)
def test_quota_and_borrowing(case: str, queues: list[QueueConfig], expect_a: int) -> None:
    waiting = jobs(16, queue="A")
    p = run({"c1": [8]}, waiting, queues=queues, policy=QUOTA)
    assert gpus_by_queue(p, waiting).get("A", 0) == expect_a, case
    if expect_a < 8:
        assert any("quota" in w.summary or "borrow" in w.summary or "lend" in w.summary
                   for w in p.waiting.values())


def test_reclaim_preempts_the_borrower_not_the_owner() -> None:
    queues = COHORT_4_4
    # A borrowed B's idle half: 8 one-GPU jobs, the later ones checkpointed more recently.
    busy = [running(f"A-{i}", queue="A", on=[("c1", "n0", 1)], started=0, checkpoint=10 * i)
            for i in range(8)]
    waiting = jobs(4, queue="B")
    p = run({"c1": [8]}, waiting, busy=busy, queues=queues, policy=QUOTA_PREEMPT, now=100)
    # The four with the least work since their checkpoint go (A-7 .. A-4), no more:
    assert victims(p) == {"A-7", "A-6", "A-5", "A-4"}
    assert all(x.reason.startswith("reclaimed") for x in p.preemptions)
    assert {str(x.for_job) for x in p.preemptions} <= {j.id for j in waiting}
    # Nothing placed yet: the victims get their grace period first.
    assert placed(p) == set()


def test_no_reclaim_from_a_queue_within_its_guarantee() -> None:
    queues = COHORT_4_4
    busy = [running(f"A-{i}", queue="A", on=[("c1", "n0", 1)]) for i in range(4)]
    # B holds its 4: its extra job would borrow, and A lends nothing it uses.
    busy += [running(f"B-{i}", queue="B", on=[("c1", "n0", 1)]) for i in range(4)]
    p = run({"c1": [8]}, jobs(1, queue="B", prefix="Bx"), busy=busy, queues=queues,
            policy=QUOTA_PREEMPT)
    assert victims(p) == set()
    assert "Bx-0" in p.waiting


# --- preemption ---------------------------------------------------------------------------


def _ckpt_fleet() -> list:
    """Two 4-GPU nodes full of one-GPU low-priority jobs; cost = seconds since checkpoint."""
    costs = {"n0": [10, 50, 60, 70], "n1": [20, 30, 80, 90]}
    return [running(f"{node}-{c}", on=[("c1", node, 1)], checkpoint=100 - c)
            for node, cs in costs.items() for c in cs]


@pytest.mark.parametrize(
    ("case", "want", "expect_victims"),
    [
        # Cheapest pair on one node: n1's 20+30=50 beats n0's 10+50=60.
        ("2-GPU slice: cheapest pair on one node", job("hi", gpus=2, priority=10),
         {"n1-20", "n1-30"}),
        ("1 GPU: the single cheapest", job("hi", gpus=1, priority=10), {"n0-10"}),
        ("4-GPU slice: the cheaper whole node", job("hi", gpus=4, priority=10),
         {"n0-10", "n0-50", "n0-60", "n0-70"}),
        ("equal priority never preempts", job("eq", gpus=1, priority=0), set()),
        ("would still not fit: an 8-GPU slice on 4-GPU nodes", job("big", gpus=8, priority=10),
         set()),
    ],
)
def test_preemption_least_cost(case: str, want, expect_victims: set[str]) -> None:  # type: ignore[no-untyped-def]
    p = run({"c1": [4, 4]}, [want], busy=_ckpt_fleet(), policy=PREEMPT, now=100)
    assert victims(p) == expect_victims, case
    if expect_victims:
        assert all(x.grace_s == PREEMPT.grace_s and str(x.for_job) == want.id
                   for x in p.preemptions)
        assert "preempting" in p.waiting[want.id].summary


def test_preemption_is_not_repeated_while_victims_stop() -> None:
    busy = _ckpt_fleet()
    busy[4] = running("n1-20", on=[("c1", "n1", 1)], stopping=True, preempted_for="hi")
    p = run({"c1": [4, 4]}, [job("hi", gpus=1, priority=10)], busy=busy, policy=PREEMPT,
            now=100)
    assert victims(p) == set()
    assert "waiting for 1 preempted job(s) to stop" in p.waiting["hi"].summary


def test_freed_gpus_are_held_for_the_preemptor() -> None:
    # One free GPU on n0; "hi" needs 2 on one node and preempts one job there. A later
    # low-priority 1-GPU job must not take the free GPU that "hi" counts on.
    busy = [running(f"x{i}", on=[("c1", "n0", 1)], checkpoint=99) for i in range(3)]
    p = run({"c1": [4]}, [job("hi", gpus=2, priority=10), job("lo", gpus=1)], busy=busy,
            policy=PREEMPT, now=100)
    assert len(victims(p)) == 1
    assert "lo" not in placed(p)


# --- backfill -----------------------------------------------------------------------------


def _backfill_case(policy: Policy):  # type: ignore[no-untyped-def]
    # One 8-GPU node; R holds 6 GPUs until t=100. The gang G needs all 8. Two GPUs are free:
    # "long" (200 s) was submitted before "short" (50 s); "unknown" declares no runtime.
    busy = [running("R", on=[("c1", "n0", 6)], started=0, max_runtime=100)]
    waiting = [
        job("G", gpus=8, priority=10, max_runtime=1000),
        job("long", gpus=2, max_runtime=200),
        job("unknown", gpus=2),
        job("short", gpus=2, max_runtime=50),
    ]
    return run({"c1": [8]}, waiting, busy=busy, policy=policy, now=0)


def test_without_backfill_the_first_small_job_takes_the_gang_s_gpus() -> None:
    p = _backfill_case(Policy())
    assert placed(p) == {"long"}  # it runs to t=200 and delays G past t=100


def test_backfill_only_admits_jobs_that_end_before_the_reservation() -> None:
    p = _backfill_case(BACKFILL)
    assert placed(p) == {"short"}
    assert p.backfilled == {"short"}
    (res,) = p.reservations
    assert (res.job, res.cluster, res.nodes, res.start_at) == ("G", "c1", ("n0",), 100)
    assert "reserved 1 node(s) on c1 from t=100" in p.waiting["G"].summary


# --- topology -----------------------------------------------------------------------------


def test_gang_stays_in_one_cluster_when_it_fits() -> None:
    p = run({"a": [8], "b": [8, 8]}, [job("g", gpus=8, slices=2)])
    assert {pl.cluster for pl in p.placements} == {"b"}


def test_multi_gpu_slice_prefers_the_tightest_node() -> None:
    busy = [running("x", on=[("c1", "n1", 4)])]
    p = run({"c1": [8, 8]}, [job("four", gpus=4)], busy=busy)
    (pl,) = p.placements
    assert pl.node == "n1"  # n0 stays whole for an 8-GPU job


def test_small_jobs_fill_the_fragmented_cluster_first() -> None:
    busy = [running("x", on=[("b", "n0", 7)])]
    p = run({"a": [8], "b": [8]}, [job("one")], busy=busy)
    assert p.placements[0].cluster == "b"


@pytest.mark.parametrize(
    ("policy", "expect_cluster", "t4_job_placed"),
    [(Policy(), "t4", False), (Policy(type_aware=True), "g2", True)],
)
def test_type_aware_spares_the_gpus_constrained_jobs_need(
    policy: Policy, expect_cluster: str, t4_job_placed: bool
) -> None:
    # A job that takes T4 or G2 comes first; a T4-only job waits behind it. Tightest fit
    # alone puts the flexible job on the small T4 cluster and leaves the T4 job nowhere.
    t4, _ = fleet({"t4": [2]}, gpu_type="T4")
    g2, _ = fleet({"g2": [8]}, gpu_type="G2")
    flexible = replace(job("flex", gpus=2), gpu_types=frozenset({"T4", "G2"}))
    only_t4 = job("t4-only", gpus=2, gpu_type="T4")
    p = plan(Snapshot(t4 + g2, (flexible, only_t4), policy=policy), 0.0)
    assert p.for_job(flexible.id)[0].cluster == expect_cluster
    assert ("t4-only" in placed(p)) is t4_job_placed


@pytest.mark.parametrize(
    ("policy", "expect_cluster"), [(Policy(), "h100"), (Policy(type_aware=True), "a100")]
)
def test_a_flexible_job_on_an_empty_fleet_takes_the_plentiful_type(
    policy: Policy, expect_cluster: str
) -> None:
    # `orrery up`'s fleet: 2 x 4 H100 in each of two clusters, 3 x 8 A100 in one. Nobody
    # waits, so there is no contention to spare; tightest fit alone picks an H100 cluster,
    # type-aware placement leaves the scarce H100 free and takes an A100 cluster.
    h1, _ = fleet({"h100": [4, 4]}, gpu_type="H100")
    h2, _ = fleet({"h100-b": [4, 4]}, gpu_type="H100")
    a, _ = fleet({"a100": [8, 8, 8]}, gpu_type="A100")
    flexible = replace(job("shards", gpus=1), gpu_types=frozenset({"H100", "A100"}))
    p = plan(Snapshot(h1 + h2 + a, (flexible,), policy=policy), 0.0)
    assert p.for_job(flexible.id)[0].cluster == expect_cluster


def test_type_aware_with_nothing_waiting_keeps_the_rare_type_free() -> None:
    # Nothing waits for T4 yet, but jobs that need it will come: a job that takes either
    # goes to the plentiful G2, across clusters and inside a cluster holding both types.
    t4, _ = fleet({"t4": [2]}, gpu_type="T4")
    g2, _ = fleet({"g2": [8]}, gpu_type="G2")
    flexible = replace(job("flex", gpus=1), gpu_types=frozenset({"T4", "G2"}))
    aware = Policy(type_aware=True)
    assert plan(Snapshot(t4 + g2, (flexible,), policy=aware), 0.0).placements[0].cluster == "g2"
    (mixed,) = fleet({"mix": [2]}, gpu_type="T4")[0]
    g2_node = replace(g2[0].nodes[0], name=NodeName("g"))
    mixed = replace(mixed, nodes=(*mixed.nodes, g2_node))
    for policy, node in ((Policy(), "n0"), (aware, "g")):  # tightest fit alone: the T4 node
        p = plan(Snapshot((mixed,), (flexible,), policy=policy), 0.0)
        assert p.placements[0].node == node


@pytest.mark.parametrize("policy", [Policy(), Policy.full()])
def test_cpu_only_jobs_are_placed_on_a_full_fleet(policy: Policy) -> None:
    busy = [running("x", on=[("c1", "n0", 8)], priority=100)]
    p = run({"c1": [8]}, [job("gpu", gpus=1), job("cpu", gpus=0)], busy=busy, policy=policy)
    assert placed(p) == {"cpu"}
    assert "gpu" in p.waiting
