"""Policy evaluation inside a scheduling pass: 200 policies, 100 clusters, 10,000 pending
jobs. Per-job overhead of ``constraints_for_pass`` (and of turning its output into
``JobRequest`` fields), against the same pass of the real scheduler without policies.
Target: the policy work under 5% of the pass without policies.

    .venv/bin/python -m pytest -m benchmark benchmarks/bench_policy.py -s

Pure CPU, no IO: the same code the hub runs in each pass.
"""

from __future__ import annotations

import dataclasses
import gc
import random
import time
from typing import Any

import pytest
import yaml

from benchmarks.conftest import record
from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.policy import ClusterFacts, JobFacts, PolicySet, Usage, build_policy_set
from orrery_hub.policy.ledger import Evaluator
from orrery_hub.scheduler import (
    ClusterCapacity,
    JobRequest,
    NodeCapacity,
    Policy,
    Snapshot,
    plan,
)

pytestmark = pytest.mark.benchmark

REGIONS = ["eu-west", "eu-north", "eu-central", "us-east", "us-west", "us-central",
           "ap-south", "ap-east", "sa-east", "me-central"]
TYPES = ["A100", "H100", "L40S"]
TEAMS = [f"t{i:02}" for i in range(20)]
QUEUES = [f"q{i}" for i in range(5)]
PROJECTS = [f"p{i:02}" for i in range(60)]
N_CLUSTERS, N_JOBS, REPEATS = 100, 10_000, 5


def fleet(rng: random.Random) -> tuple[list[ClusterCapacity], list[ClusterFacts]]:
    caps, facts = [], []
    for i in range(N_CLUSTERS):
        name = ClusterName(f"{REGIONS[i % 10]}-{i // 10}")
        labels = {"region": REGIONS[i % 10], "tier": rng.choice(["reserved", "spot", "std"])}
        if i % 3 == 0:
            labels["hipaa"] = "true"
        gpu = TYPES[i % 3]
        nodes = tuple(
            NodeCapacity(NodeName(f"{name}-n{k}"), gpu, 8, tuple(range(rng.randint(0, 8))))
            for k in range(4)
        )
        caps.append(ClusterCapacity(name, labels, True, nodes))
        facts.append(ClusterFacts(name, labels, frozenset({gpu})))
    return caps, facts


def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "orrery/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def policy_set(clusters: list[ClusterFacts], *, ledger: bool = True) -> PolicySet:
    """200 policies; ``ledger=False`` drops quotas and budgets (the per-job part of a pass)."""
    docs = []
    for i, t in enumerate(TEAMS):  # 20 team placements: a home region, a forbidden glob
        docs.append(doc("Placement", f"team-{t}", {
            "match": {"team": t},
            "forbid": {"clusters": [f"{REGIONS[(i + 5) % 10]}-[0-1]"]},
            "prefer": [{"clusterLabels": {"region": REGIONS[i % 10]}, "weight": 5}]}))
    for i, p in enumerate(PROJECTS[:40]):  # 40 project placements
        docs.append(doc("Placement", f"proj-{p}", {
            "match": {"labels": {"project": p}},
            "require": {"clusterLabels": {"region": [f"{REGIONS[i % 10][:2]}-*",
                                                     REGIONS[(i + 1) % 10]]}}}))
    for res in ("eu", "us", "ap"):
        docs.append(doc("Placement", f"residency-{res}", {
            "match": {"labels": {"data-residency": res}},
            "require": {"clusterLabels": {"region": f"{res}-*"}}}))
    docs.append(doc("Placement", "hipaa", {"match": {"labels": {"compliance": "hipaa"}},
                                           "require": {"clusterLabels": {"hipaa": "true"}}}))
    for i, q in enumerate(QUEUES * 3):  # 15 queue placements
        docs.append(doc("Placement", f"queue-{q}-{i}", {
            "match": {"queue": q},
            "prefer": [{"clusterLabels": {"tier": "reserved"}, "weight": 1 + i}]}))
    docs.append(doc("Placement", "no-spot-for-prod", {
        "match": {"queue": "q0"}, "forbid": {"clusterLabels": {"tier": "spot"}}}))
    for t in TEAMS:  # 20 team guardrails with quotas
        docs.append(doc("Guardrail", f"limits-{t}", {
            "match": {"team": t}, "maxGpusPerJob": 64, "maxRuntime": "48h",
            "allowedGpuTypes": ["A100", "H100", "L40S"], "quota": {"gpus": 160}}))
    for q in QUEUES:  # 5 queue quotas
        docs.append(doc("Guardrail", f"queue-{q}", {"match": {"queue": q},
                                                    "quota": {"gpus": 900, "per": "queue"}}))
    for p in PROJECTS:  # 60 project guardrails
        docs.append(doc("Guardrail", f"proj-{p}", {"match": {"labels": {"project": p}},
                                                   "maxSlices": 16}))
    docs.append(doc("Guardrail", "everyone", {"maxRuntime": "72h"}))
    for i in range(15):  # 15 team-in-queue limits
        docs.append(doc("Guardrail", f"tq-{i}", {
            "match": {"team": TEAMS[i], "queue": QUEUES[i % 5]}, "maxGpusPerJob": 32}))
    for k in range(10):  # 10 price lists, 10 clusters each, on-demand and spot
        prices = []
        for c in clusters[k * 10:(k + 1) * 10]:
            (t,) = c.gpu_types
            prices.append({"cluster": c.name, "gpuType": t, "perGpuHour": 1.0 + (k % 4)})
            prices.append({"cluster": c.name, "gpuType": t, "perGpuHour": 0.5 + (k % 3),
                           "spot": True})
        docs.append(doc("Cost", f"prices-{k}", {"prices": prices, "placementWeight": 3}))
    for k in range(9):  # 9 budget lists
        docs.append(doc("Cost", f"budget-{k}", {"budgets": [
            {"team": TEAMS[2 * k], "period": "month", "limit": 2_000_000},
            {"team": TEAMS[2 * k + 1], "period": "day", "limit": 150_000, "action": "hold"}]}))
    assert len(docs) == 200, len(docs)
    if not ledger:
        for d in docs:
            d["spec"].pop("quota", None)
            d["spec"].pop("budgets", None)
        docs = [d for d in docs if d["kind"] != "Guardrail" or len(d["spec"]) > 1]
        docs = [d for d in docs if d["kind"] != "Cost" or d["spec"].get("prices")]
    return build_policy_set([("bench.yaml", yaml.safe_dump_all(docs))])


def queue(rng: random.Random) -> list[JobFacts]:
    out = []
    for i in range(N_JOBS):
        labels = {"team": rng.choice(TEAMS), "project": rng.choice(PROJECTS), "run": f"r{i}"}
        r = rng.random()
        if r < 0.2:
            labels["data-residency"] = "eu"
        elif r < 0.25:
            labels["data-residency"] = rng.choice(["us", "ap"])
        if rng.random() < 0.05:
            labels["compliance"] = "hipaa"
        types = rng.choice([None, None, ["H100"], ["A100"], ["A100", "H100"]])
        out.append(JobFacts(
            name=f"j{i}", labels=labels, queue=rng.choice(QUEUES), slices=rng.randint(1, 4),
            gpus_per_slice=rng.choice([1, 2, 4, 8]),
            gpu_types=frozenset(types) if types else None,
            max_runtime_s=rng.choice([3600.0, 4 * 3600.0, 12 * 3600.0]),
            id=JobId(f"j{i}"), priority=rng.randint(0, 3), seq=i, pending_slices=None,
        ))
    return out


def requests(jobs: list[JobFacts]) -> list[JobRequest]:
    return [
        JobRequest(id=JobId(str(j.id)), name=j.name, priority=j.priority, seq=j.seq,
                   gpus_per_slice=j.gpus_per_slice, gpu_types=j.gpu_types,
                   pending=tuple(SliceIndex(k) for k in range(j.slices)), gang=True,
                   queue=j.queue, labels=j.labels, max_runtime=j.max_runtime_s)
        for j in jobs
    ]


def interleaved(fns: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Best of REPEATS for each, measured in rounds (one of each per round), so that load
    from elsewhere on a shared machine falls on every figure alike."""
    best: dict[str, float] = {k: float("inf") for k in fns}
    out: dict[str, Any] = {}
    for _ in range(REPEATS):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            out[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best, out


def test_policy_overhead_in_a_pass() -> None:
    rng = random.Random(5)
    caps, facts = fleet(rng)
    ps = policy_set(facts)
    jobs = queue(rng)
    plain = requests(jobs)
    usage = Usage(gpus_by_team={t: rng.randint(0, 160) for t in TEAMS},
                  gpus_by_queue={q: rng.randint(0, 600) for q in QUEUES},
                  spend={(t, p): rng.uniform(0, 100_000) for t in TEAMS for p in ("day", "month")})
    warm_evaluator = Evaluator(ps, facts)
    cons = warm_evaluator.constraints_for_pass(jobs, usage)
    static = Evaluator(policy_set(facts, ledger=False), facts)
    static.constraints_for_pass(jobs, usage)
    constrained = [dataclasses.replace(r, allowed_clusters=c.allowed_clusters,
                                       denied_reasons=c.denied_reasons,
                                       cluster_scores=c.cluster_scores, gpu_types=c.gpu_types)
                   for r in plain if (c := cons[r.id]) is not None]

    def cold() -> Any:
        # The first pass after a start or reload: nothing memoised, not even matching.
        return Evaluator(dataclasses.replace(ps, _memo={}), facts).constraints_for_pass(
            jobs, usage)

    t, res = interleaved({
        "base": lambda: plan(Snapshot(tuple(caps), tuple(plain)), 0.0),
        "full": lambda: plan(Snapshot(tuple(caps), tuple(plain), policy=Policy.full()), 0.0),
        "cold": cold,
        # Every later pass: same policies and clusters, new usage, the same or fewer jobs.
        "warm": lambda: warm_evaluator.constraints_for_pass(jobs, usage),
        "static": lambda: static.constraints_for_pass(jobs, usage),
        "policed": lambda: plan(Snapshot(tuple(caps), tuple(constrained)), 0.0),
    })
    base_s, full_s, cold_s, warm_s, static_s, policed_s = (
        t["base"], t["full"], t["cold"], t["warm"], t["static"], t["policed"])
    base_plan, policed_plan = res["base"], res["policed"]
    blocked = sum(1 for r in constrained if r.allowed_clusters == frozenset())
    restricted = sum(1 for r in constrained if r.allowed_clusters is not None)
    figures = {
        "policies": len(ps.entries), "clusters": N_CLUSTERS, "pending_jobs": N_JOBS,
        "pass_without_policies_ms": round(base_s * 1000, 1),
        "full_pass_without_policies_ms": round(full_s * 1000, 1),
        "policy_cold_pass_ms": round(cold_s * 1000, 1),
        "policy_cold_per_job_us": round(cold_s / N_JOBS * 1e6, 2),
        "policy_warm_pass_ms": round(warm_s * 1000, 1),
        "policy_warm_per_job_us": round(warm_s / N_JOBS * 1e6, 2),
        "warm_overhead_vs_pass_pct": round(100 * warm_s / base_s, 1),
        "cold_overhead_vs_pass_pct": round(100 * cold_s / base_s, 1),
        "warm_overhead_vs_full_pass_pct": round(100 * warm_s / full_s, 1),
        "warm_no_quota_budget_ms": round(static_s * 1000, 1),
        "warm_no_quota_budget_per_job_us": round(static_s / N_JOBS * 1e6, 2),
        "warm_no_quota_budget_vs_pass_pct": round(100 * static_s / base_s, 1),
        "pass_with_policy_constraints_ms": round(policed_s * 1000, 1),
        "placed_without_policies": len(base_plan.placements),
        "placed_with_policies": len(policed_plan.placements),
        "jobs_restricted_by_placement": restricted,
        "jobs_blocked_by_quota_or_budget": blocked,
        "distinct_profiles": len(warm_evaluator.profiles),
        "best_of": REPEATS,
    }
    record("policy", figures)
    assert figures["placed_with_policies"] > 0
