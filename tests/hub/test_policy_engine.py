"""The policy engine, kind by kind: tables of (policies, job, fleet) -> decision and reason."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from orrery.ids import ClusterName, JobId
from orrery_hub.policy import (
    NO_USAGE,
    Evaluator,
    Usage,
    admit,
    admit_key,
    constraints,
    constraints_for_pass,
    period_end,
    period_start,
    price_of,
    runtime_exceeded,
)
from tests.hub.test_policy_helpers import FLEET, job, policies

EU = {"data-residency": "eu"}
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC).timestamp()

RESIDENCY = "Placement eu-residency: {match: {labels: {data-residency: eu}}, " \
    "require: {clusterLabels: {region: 'eu-*'}}}"


def names(*ns: str) -> frozenset[ClusterName]:
    return frozenset(ClusterName(n) for n in ns)


# --- Placement --------------------------------------------------------------------------

PLACEMENT_CASES = [
    pytest.param(
        [RESIDENCY], EU, names("eu-west-1", "eu-north-1"),
        {"us-east-1": "forbidden by placement/eu-residency (requires region=eu-*; "
                      "has region=us-east)"},
        id="residency-glob",
    ),
    pytest.param([RESIDENCY], {}, None, {}, id="not-matching-job-unrestricted"),
    pytest.param([RESIDENCY], {"data-residency": "us"}, None, {}, id="other-label-value"),
    pytest.param(
        ["Placement p: {require: {clusters: [eu-west-1, 'ap-*']}}"], {},
        names("eu-west-1", "ap-south-1"), {}, id="require-by-name-and-glob",
    ),
    pytest.param(
        ["Placement p: {require: {clusterLabels: {hipaa: 'true'}}}"], {},
        names("eu-north-1", "us-east-1"),
        {"eu-west-1": "forbidden by placement/p (requires hipaa=true; has no hipaa label)"},
        id="compliance-tag",
    ),
    pytest.param(
        [RESIDENCY, "Placement no-north: {forbid: {clusters: [eu-north-1]}}"], EU,
        names("eu-west-1"),
        {"eu-north-1": "forbidden by placement/no-north (forbids cluster eu-north-1)"},
        id="forbids-add-up",
    ),
    pytest.param(
        ["Placement a: {require: {clusters: [us-east-1]}}",
         "Placement b: {forbid: {clusterLabels: {region: 'us-*'}}}"], {},
        frozenset(), {"us-east-1": "forbidden by placement/b (forbids region=us-*)"},
        id="forbid-beats-require",
    ),
    pytest.param(
        ["Placement p: {match: {queue: 'exp*'}, forbid: {clusterLabels: {region: "
         "[us-east, ap-south]}}}"], {},
        None, {}, id="queue-glob-not-matching",
    ),
    pytest.param(
        ["Placement p: {match: {team: [nlp, vision]}, require: {clusterLabels: "
         "{region: 'eu-w*'}}}"], {"team": "vision"},
        names("eu-west-1"), {}, id="team-list",
    ),
]


@pytest.mark.parametrize(("docs", "labels", "allowed", "some_reasons"), PLACEMENT_CASES)
def test_placement(docs: list[str], labels: dict[str, str], allowed: frozenset[ClusterName] | None,
                   some_reasons: dict[str, str]) -> None:
    c = constraints(job(labels=labels), FLEET, policies(*docs), NO_USAGE)
    assert c.allowed_clusters == allowed
    for name, reason in some_reasons.items():
        assert c.denied_reasons[ClusterName(name)] == reason
    if allowed is not None:
        # Every cluster not allowed says why; no allowed cluster carries a reason.
        assert set(c.denied_reasons) == {f.name for f in FLEET} - allowed


def test_two_placements_that_leave_no_cluster_say_so_together() -> None:
    ps = policies(RESIDENCY, "Placement us-only: {match: {team: nlp}, "
                  "require: {clusterLabels: {region: 'us-*'}}}")
    c = constraints(job(labels={**EU, "team": "nlp"}), FLEET, ps, NO_USAGE)
    assert c.allowed_clusters == frozenset()
    assert c.summary == ("no cluster satisfies placement/eu-residency and placement/us-only "
                         "together")
    assert "placement/us-only" in c.denied_reasons[ClusterName("eu-west-1")]
    assert "placement/eu-residency" in c.denied_reasons[ClusterName("us-east-1")]
    both = c.denied_reasons[ClusterName("ap-south-1")]
    assert both.startswith("forbidden by placement/eu-residency (requires region=eu-*")
    assert "; forbidden by placement/us-only (requires region=us-*; has region=ap-south)" in both
    assert len(c.denied_reasons) == len(FLEET)


def test_preferences_add_up_and_only_rank_allowed_clusters() -> None:
    ps = policies(
        RESIDENCY,
        "Placement pref: {prefer: [{clusterLabels: {tier: reserved}, weight: 10}, "
        "{clusters: ['eu-*'], weight: 2}, {clusters: [us-east-1], weight: 50}]}",
    )
    c = constraints(job(labels=EU), FLEET, ps, NO_USAGE)
    assert dict(c.cluster_scores) == {"eu-west-1": 12.0, "eu-north-1": 2.0}


def test_a_job_missing_the_label_never_matches_even_a_star() -> None:
    ps = policies("Placement p: {match: {labels: {project: '*'}}, forbid: {clusters: ['*']}}")
    assert constraints(job(), FLEET, ps, NO_USAGE).allowed_clusters is None
    c = constraints(job(labels={"project": "x"}), FLEET, ps, NO_USAGE)
    assert c.allowed_clusters == frozenset()


# --- Guardrail --------------------------------------------------------------------------

NLP = "Guardrail nlp: {match: {team: nlp}, maxGpusPerJob: 64, maxSlices: 8, " \
    "allowedGpuTypes: [A100, H100], maxRuntime: 24h, quota: {gpus: 128}}"

GUARDRAIL_CASES = [
    pytest.param(dict(slices=8, gpus=8), "admitted", [], id="at-the-limits"),
    pytest.param(dict(slices=9, gpus=8), "denied",
                 ["guardrail/nlp: asks for 72 GPUs; at most 64 per job",
                  "guardrail/nlp: asks for 9 slices; at most 8"], id="size-and-slices"),
    pytest.param(dict(types=frozenset({"V100"})), "denied",
                 ["guardrail/nlp: asks for V100 GPUs; allowed: A100, H100"], id="gpu-type"),
    pytest.param(dict(types=frozenset({"V100", "H100"})), "admitted", [], id="narrowed"),
    pytest.param(dict(runtime=48 * 3600.0), "denied",
                 ["guardrail/nlp: declares maxRuntime 48h; at most 24h"], id="runtime"),
    pytest.param(dict(runtime=3600.0), "admitted", [], id="shorter-runtime"),
]


@pytest.mark.parametrize(("kw", "decision", "denials"), GUARDRAIL_CASES)
def test_guardrail_admission(kw: dict[str, object], decision: str, denials: list[str]) -> None:
    a = admit(job(labels={"team": "nlp"}, **kw), policies(NLP), NO_USAGE, NOW)  # type: ignore[arg-type]
    assert a.decision == decision
    assert [f"{p}: {r}" for p, r in a.denials] == denials


def test_guardrails_for_other_teams_do_not_apply() -> None:
    a = admit(job(labels={"team": "vision"}, slices=100, gpus=8), policies(NLP), NO_USAGE, NOW)
    assert a.admitted


def test_tightest_guardrail_wins_and_every_breaker_is_named() -> None:
    ps = policies(NLP, "Guardrail all: {maxGpusPerJob: 16, maxRuntime: 2h}")
    a = admit(job(labels={"team": "nlp"}, slices=4, gpus=8), ps, NO_USAGE, NOW)
    assert [p for p, _ in a.denials] == ["guardrail/all"]
    assert a.runtime_limit_s == 7200.0
    assert a.runtime_limit_source == "guardrail/all"
    a = admit(job(labels={"team": "nlp"}, slices=9, gpus=8), ps, NO_USAGE, NOW)
    assert [p for p, _ in a.denials] == ["guardrail/nlp", "guardrail/nlp", "guardrail/all"]


def test_allowed_types_narrow_a_job_that_allows_any_and_rule_out_clusters() -> None:
    ps = policies("Guardrail a100: {allowedGpuTypes: [A100]}")
    a = admit(job(), ps, NO_USAGE, NOW)
    assert a.admitted
    assert a.gpu_types == frozenset({"A100"})
    c = constraints(job(), FLEET, ps, NO_USAGE)
    assert c.gpu_types == frozenset({"A100"})
    assert c.allowed_clusters == names("ap-south-1")
    assert c.denied_reasons[ClusterName("eu-west-1")] == (
        "no A100 GPUs, the only types guardrail/a100 allows")


def test_two_guardrails_whose_types_do_not_meet_deny_together() -> None:
    ps = policies("Guardrail a: {allowedGpuTypes: [A100]}",
                  "Guardrail h: {allowedGpuTypes: [H100]}")
    a = admit(job(), ps, NO_USAGE, NOW)
    assert a.decision == "denied"
    assert a.message() == "guardrail/a and guardrail/h: together allow no GPU type"


def test_a_job_bigger_than_its_quota_is_denied_at_submit() -> None:
    a = admit(job(labels={"team": "nlp"}, slices=8, gpus=8),
              policies("Guardrail q: {match: {team: nlp}, quota: {gpus: 32}}"), NO_USAGE, NOW)
    assert a.message() == ("guardrail/q: asks for 64 GPUs; team nlp quota is 32 GPUs at once, "
                           "so it could never run")


@pytest.mark.parametrize(
    ("declared", "started", "now", "stopped"),
    [
        pytest.param(None, 0.0, 24 * 3600.0, None, id="exactly-at-limit"),
        pytest.param(None, 0.0, 24 * 3600.0 + 1, "ran past its max runtime of 24h "
                     "(guardrail/nlp)", id="guardrail-limit"),
        pytest.param(600.0, 0.0, 601.0, "ran past its max runtime of 10m (the job's "
                     "maxRuntime)", id="own-shorter-limit"),
    ],
)
def test_runtime_exceeded(declared: float | None, started: float, now: float,
                          stopped: str | None) -> None:
    stop = runtime_exceeded(job(labels={"team": "nlp"}, runtime=declared), policies(NLP),
                            started, now)
    assert (stop.reason if stop else None) == stopped


def test_no_runtime_limit_without_one() -> None:
    assert runtime_exceeded(job(), policies(NLP), 0.0, 1e9) is None


# --- Quotas within a pass ---------------------------------------------------------------

QUOTA = "Guardrail q: {match: {team: nlp}, quota: {gpus: 32}}"


def test_quota_is_charged_in_scheduler_order_within_a_pass() -> None:
    jobs = [job(f"j{i}", id=f"j{i}", labels={"team": "nlp"}, slices=2, gpus=8, seq=i,
                priority=1 if i == 3 else 0) for i in range(4)]
    out = constraints_for_pass(jobs, FLEET, policies(QUOTA), Usage(gpus_by_team={"nlp": 8}))
    # 8 in use + 16 for j3 (highest priority) = 24; j0 would need 40 > 32.
    blocked = {j for j, c in out.items() if c.blocked}
    assert blocked == {"j0", "j1", "j2"}
    assert out[JobId("j3")].allowed_clusters is None
    assert out[JobId("j0")].denied_reasons[ClusterName("ap-south-1")] == (
        "team nlp quota 24/32 GPUs in use, job needs 16 (guardrail/q)")


def test_quota_per_queue_and_per_team_for_every_team() -> None:
    ps = policies("Guardrail each: {quota: {gpus: 8}}",
                  "Guardrail research: {match: {queue: research}, quota: {gpus: 10, per: queue}}")
    usage = Usage(gpus_by_team={"a": 8}, gpus_by_queue={"research": 4})
    c = constraints(job(labels={"team": "a"}), FLEET, ps, usage)
    assert c.blocked == ("team a quota 8/8 GPUs in use, job needs 1 (guardrail/each)",)
    c = constraints(job(labels={"team": "b"}, queue="research", gpus=7), FLEET, ps, usage)
    assert c.blocked == ("queue research quota 4/10 GPUs in use, job needs 7 "
                         "(guardrail/research)",)
    assert not constraints(job(labels={"team": "b"}, gpus=6), FLEET, ps, usage).blocked


def test_jobs_without_team_share_one_bucket() -> None:
    c = constraints(job(gpus=2), FLEET, policies("Guardrail each: {quota: {gpus: 8}}"),
                    Usage(gpus_by_team={"": 7}))
    assert c.blocked == ("jobs without a team label quota 7/8 GPUs in use, job needs 2 "
                         "(guardrail/each)",)


# --- Cost -------------------------------------------------------------------------------

PRICES = ("Cost prices: {placementWeight: 4, prices: ["
          "{cluster: eu-west-1, gpuType: H100, perGpuHour: 4.0},"
          "{cluster: eu-west-1, gpuType: H100, perGpuHour: 1.0, spot: true},"
          "{cluster: 'eu-*', gpuType: H100, perGpuHour: 3.0},"
          "{cluster: '*', gpuType: H100, perGpuHour: 2.0},"
          "{cluster: '*', gpuType: A100, perGpuHour: 1.0}]}")


@pytest.mark.parametrize(
    ("cluster_name", "gpu", "spot", "price"),
    [
        pytest.param("eu-west-1", "H100", False, 4.0, id="exact-beats-glob"),
        pytest.param("eu-west-1", "H100", True, 1.0, id="spot"),
        pytest.param("eu-north-1", "H100", False, 3.0, id="first-glob-in-order"),
        pytest.param("eu-north-1", "H100", True, 3.0, id="spot-falls-back-to-on-demand"),
        pytest.param("us-east-1", "H100", False, 2.0, id="catch-all"),
        pytest.param("us-east-1", "V100", False, None, id="unpriced"),
    ],
)
def test_price_of(cluster_name: str, gpu: str, spot: bool, price: float | None) -> None:
    assert price_of(policies(PRICES), cluster_name, gpu, spot=spot) == price


def test_estimate_uses_runtime_limit_and_cluster_prices() -> None:
    a = admit(job(slices=2, gpus=4, runtime=2 * 3600.0), policies(PRICES), NO_USAGE, NOW,
              clusters=FLEET)
    per = {str(k): v for k, v in a.estimate.per_cluster.items()}
    # 8 GPUs x 2h x price; ap-south has only A100 (1.0); the job allows any type.
    assert per == {"eu-west-1": 64.0, "eu-north-1": 48.0, "us-east-1": 32.0, "ap-south-1": 16.0}
    assert (a.estimate.low, a.estimate.high) == (16.0, 64.0)


def test_estimate_defaults_to_24h_without_any_runtime() -> None:
    a = admit(job(gpus=1, types=frozenset({"A100"})), policies(PRICES), NO_USAGE, NOW)
    assert a.estimate.runtime_s == 24 * 3600.0
    assert a.estimate.low == 24.0


def test_cheaper_clusters_score_higher_by_the_weight() -> None:
    c = constraints(job(types=frozenset({"H100"})), FLEET, policies(PRICES), NO_USAGE)
    # dearest (eu-west-1, 4.0) gets 0; weight x (1 - price/4).
    assert dict(c.cluster_scores) == {"eu-north-1": 1.0, "us-east-1": 2.0}


BUDGETS = ("Cost budgets: {budgets: [{team: nlp, period: month, limit: 100, action: deny},"
           " {team: 'v*', period: day, limit: 50, action: hold}]}")


@pytest.mark.parametrize(
    ("team", "spent", "decision", "policy"),
    [
        pytest.param("nlp", 0.0, "admitted", None, id="fits"),
        pytest.param("nlp", 80.0, "denied", "cost/budgets", id="deny"),
        pytest.param("vision", 30.0, "held", "cost/budgets", id="hold-glob-team"),
        pytest.param("other", 1e9, "admitted", None, id="no-budget"),
    ],
)
def test_budget_admission(team: str, spent: float, decision: str, policy: str | None) -> None:
    # 1 A100 x 24h x $1 = $24 at least.
    usage = Usage(spend={(team, "month"): spent, (team, "day"): spent})
    a = admit(job(labels={"team": team}, types=frozenset({"A100"})),
              policies(PRICES, BUDGETS), usage, NOW)
    assert a.decision == decision
    got = a.denials or a.holds
    assert [p for p, _ in got] == ([policy] if policy else [])


def test_budget_reason_names_period_and_what_is_left() -> None:
    a = admit(job(labels={"team": "nlp"}, types=frozenset({"A100"})), policies(PRICES, BUDGETS),
              Usage(spend={("nlp", "month"): 80.0}), NOW)
    assert a.message() == ("cost/budgets: estimated cost $24.00 exceeds team nlp's month budget "
                           "(resets 2026-12-01): $20.00 of $100.00 left")


def test_budget_rules_out_dear_clusters_and_is_charged_within_a_pass() -> None:
    ps = policies(PRICES, BUDGETS)
    usage = Usage(spend={("nlp", "month"): 20.0})
    # 1 H100 x 24h: eu-west-1 $96 > $80 left; eu-north-1 $72, us-east-1 $48, ap-south-1 none.
    jobs = [job("a", id="a", labels={"team": "nlp"}, types=frozenset({"H100"}), seq=0),
            job("b", id="b", labels={"team": "nlp"}, types=frozenset({"H100"}), seq=1)]
    out = constraints_for_pass(jobs, FLEET, ps, usage)
    a = out[JobId("a")]
    assert a.allowed_clusters == names("eu-north-1", "us-east-1", "ap-south-1")
    assert "month budget: $80.00 of $100.00 left (cost/budgets)" in a.denied_reasons[
        ClusterName("eu-west-1")]
    # a is charged at its dearest allowed cluster ($72): $8 left, no priced cluster fits b.
    b = out[JobId("b")]
    assert b.allowed_clusters == names("ap-south-1")


@pytest.mark.parametrize(
    ("period", "start", "end"),
    [("day", "2026-11-28", "2026-11-29"), ("month", "2026-11-01", "2026-12-01")],
)
def test_periods_are_utc_calendar(period: str, start: str, end: str) -> None:
    def day(s: str) -> float:
        return datetime.fromisoformat(s).replace(tzinfo=UTC).timestamp()

    assert period_start(period, NOW) == day(start)  # type: ignore[arg-type]
    assert period_end(period, NOW) == day(end)  # type: ignore[arg-type]


def test_december_rolls_into_next_year() -> None:
    dec = datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    assert period_end("month", dec) == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


# --- The evaluator across passes --------------------------------------------------------


def test_a_reused_evaluator_answers_like_a_fresh_one_pass_after_pass() -> None:
    ps = policies(RESIDENCY, QUOTA, NLP, PRICES, BUDGETS)
    jobs = [job(f"j{i}", id=f"j{i}", labels={"team": "nlp", **(EU if i % 2 else {})},
                slices=1 + i % 3, gpus=4, seq=i) for i in range(12)]
    ev = Evaluator(ps, FLEET)
    for used in (0, 8, 24, 32):
        usage = Usage(gpus_by_team={"nlp": used}, spend={("nlp", "month"): used * 2.0})
        again = ev.constraints_for_pass(jobs, usage)
        fresh = constraints_for_pass(jobs, FLEET, ps, usage)
        assert {k: (v.allowed_clusters, v.blocked, dict(v.denied_reasons)) for k, v in
                again.items()} == {k: (v.allowed_clusters, v.blocked, dict(v.denied_reasons))
                                   for k, v in fresh.items()}
    assert ev.serves(ps, FLEET)
    assert not ev.serves(ps, FLEET[:2])
    assert not ev.serves(policies(RESIDENCY), FLEET)


def test_admission_prices_only_clusters_placement_allows() -> None:
    a = admit(job(labels=EU, runtime=3600.0), policies(RESIDENCY, PRICES), NO_USAGE, NOW,
              clusters=FLEET)
    assert {str(k) for k in a.estimate.per_cluster} == {"eu-west-1", "eu-north-1"}
    assert (a.estimate.low, a.estimate.high) == (3.0, 4.0)


def test_jobs_with_equal_admission_keys_get_equal_decisions() -> None:
    """A batch decides each ``admit_key`` once: every field that changes a decision must
    change the key, and jobs with equal keys must be decided alike."""
    ps = policies(RESIDENCY, NLP, PRICES, BUDGETS,
                  "Guardrail prio: {match: {queue: 'exp*'}, maxPriority: 5}")
    usage = Usage(spend={("nlp", "month"): 60.0, ("vision", "day"): 30.0})
    variants = [
        job(f"n{i}", labels=labels, queue=queue, slices=slices, gpus=gpus, types=types,
            runtime=runtime, priority=priority)
        for i, (labels, queue, slices, gpus, types, runtime, priority) in enumerate(
            (labels, queue, slices, gpus, types, runtime, priority)
            for labels in ({}, {"team": "nlp"}, {"team": "vision"}, {"team": "nlp", **EU},
                           {"team": "nlp", "unread": "x"})
            for queue in ("default", "exp1")
            for slices in (1, 9)
            for gpus in (0, 8)
            for types in (None, frozenset({"V100"}), frozenset({"H100"}))
            for runtime in (None, 3600.0, 48 * 3600.0)
            for priority in (0, 9)
        )
    ]
    by_key: dict[object, object] = {}
    for j in variants:
        a = admit(j, ps, usage, NOW, clusters=FLEET)
        seen = by_key.setdefault(admit_key(j, ps), a)
        assert seen == a, j
    # Distinct decisions did arise, and unread fields (name, an unmatched label) share keys.
    assert len({(a.decision, a.denials, a.holds) for a in by_key.values()}) > 5  # type: ignore[attr-defined]
    assert len(by_key) < len(variants)


def test_cluster_prices_remembered_follow_a_cluster_that_gains_a_gpu_type() -> None:
    from dataclasses import replace

    from orrery_hub.policy.cost import cluster_price

    ps = policies(PRICES)
    ap = FLEET[3]  # A100 only: 1.0
    assert cluster_price(ps, ap, None) == 1.0
    assert cluster_price(ps, ap, None) == 1.0  # remembered, same answer
    # H100 nodes join it: the catch-all H100 price (2.0) is now on offer but A100 stays cheaper.
    grown = replace(ap, gpu_types=frozenset({"A100", "H100"}))
    assert cluster_price(ps, grown, frozenset({"H100"})) == 2.0
    assert cluster_price(ps, grown, None) == 1.0
    spot = replace(FLEET[0], spot=True)  # eu-west-1: spot price set
    assert cluster_price(ps, FLEET[0], None) == 4.0
    assert cluster_price(ps, spot, None) == 1.0


def test_without_any_price_no_cluster_is_priced() -> None:
    a = admit(job(slices=2, gpus=4), policies(), NO_USAGE, NOW, clusters=FLEET)
    assert a.estimate.per_cluster == {}
    assert a.estimate.low is None


def test_an_evaluator_serves_its_own_clusters_and_policies_only() -> None:
    from dataclasses import replace

    from orrery_hub.policy.ledger import Evaluator

    ps = policies(PRICES)
    ev = Evaluator(ps, FLEET)
    assert ev.serves(ps, FLEET)  # the very tuple
    assert ev.serves(ps, tuple(FLEET))  # an equal one
    assert ev.serves(ps, list(FLEET))
    assert not ev.serves(policies(PRICES), FLEET)  # policies reloaded: another object
    grown = (*FLEET[:3], replace(FLEET[3], gpu_types=frozenset({"A100", "H100"})))
    assert not ev.serves(ps, grown)
    assert not ev.serves(ps, FLEET[:3])


def test_admission_keeps_its_evaluator_while_clusters_and_policies_stay(tmp_path: Path) -> None:
    from orrery_hub.admission.admit import Admitter
    from orrery_hub.admission.gate import PolicyGate
    from orrery_hub.apply.jobdb import JobDb

    a = Admitter(PolicyGate(None), JobDb(), tmp_path)
    first = a._evaluator_for(FLEET)
    assert first is not None and a._evaluator_for(FLEET) is first
    assert a._evaluator_for(FLEET[:2]) is not first  # a cluster left: made again
    assert a._evaluator_for(()) is None
