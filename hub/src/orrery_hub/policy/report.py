"""``orrery policy check``'s answer, and the body of ``POST /v1/policies:check``.

One function builds it for both: the CLI offline (no clusters known) and the hub (its
inventory and usage), so the two never disagree on what a check means.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from orrery_hub.policy.engine import admit, constraints
from orrery_hub.policy.facts import ClusterFacts, JobFacts, Usage
from orrery_hub.policy.policyset import PolicySet


class _Out(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True
    )


class PolicyReason(_Out):
    policy: str  # "guardrail/nlp-limits"
    reason: str


class CostView(_Out):
    gpus: int
    runtime_seconds: float
    low: float | None  # None: no price known for the job's GPU types
    high: float | None
    per_cluster: dict[str, float] = Field(default_factory=dict)


class CheckRequest(_Out):
    """``POST /v1/policies:check`` body: the manifest text, as for ``POST /v1/jobs``."""

    manifest: str


class CheckReport(_Out):
    decision: Literal["admitted", "denied", "held"]
    admitted: bool
    denials: list[PolicyReason] = Field(default_factory=list)
    holds: list[PolicyReason] = Field(default_factory=list)
    applies: list[str] = Field(default_factory=list, description="policies matching the job")
    placement_rules: list[PolicyReason] = Field(
        default_factory=list, description="what each applying Placement asks of a cluster"
    )
    gpu_types: list[str] | None = None  # after guardrails; None: any
    max_runtime_seconds: float | None = None
    max_runtime_source: str | None = None
    estimated_cost: CostView
    clusters_known: bool  # False: an offline check, which cannot tell which clusters exist
    eligible_clusters: list[str] = Field(default_factory=list)
    ineligible: dict[str, str] = Field(default_factory=dict, description="cluster -> why not")
    summary: str | None = None  # e.g. "no cluster satisfies placement/a and placement/b together"
    policies_digest: str


def check_report(
    job: JobFacts,
    policies: PolicySet,
    usage: Usage,
    now: float,
    clusters: Sequence[ClusterFacts] | None,
) -> CheckReport:
    a = admit(job, policies, usage, now, clusters=clusters)
    m = policies.matching(job)
    applies = [r.ref for r in m.placements] + [r.ref for r in m.guardrails]
    applies += sorted({b.ref for b in policies.budgets if b.team.matches(job.team)})
    rules: list[PolicyReason] = []
    for r in m.placements:
        parts = []
        if r.require is not None:
            parts.append(f"requires {r.require.text()}")
        if r.forbid is not None:
            parts.append(f"forbids {r.forbid.text()}")
        parts += [f"prefers {sel.text()} (weight {w:g})" for sel, w in r.prefer]
        rules.append(PolicyReason(policy=r.ref, reason="; ".join(parts)))
    eligible: list[str] = []
    ineligible: dict[str, str] = {}
    summary: str | None = None
    if clusters is not None:
        c = constraints(job, clusters, policies, usage)
        eligible = [str(n) for n in c.eligible(clusters)]
        ineligible = {str(k): v for k, v in sorted(c.denied_reasons.items())}
        summary = c.summary
        # Policies may allow a cluster that has none of the job's GPU types: it is not
        # eligible all the same (the scheduler would never place the job there).
        want = a.gpu_types if a.gpu_types is not None else job.gpu_types
        if job.gpus_per_slice > 0:
            facts = {str(x.name): x for x in clusters}
            for name in list(eligible):
                has = facts[name].gpu_types
                if not has or (want is not None and not (has & want)):
                    eligible.remove(name)
                    kinds = "/".join(sorted(want)) if want is not None else "GPU"
                    ineligible[name] = f"has no {kinds} GPUs"
            ineligible = dict(sorted(ineligible.items()))
        if not eligible and summary is None:
            summary = "no cluster is eligible" if clusters else "the hub knows no clusters"
    est = a.estimate
    return CheckReport(
        decision=a.decision,
        admitted=a.admitted,
        denials=[PolicyReason(policy=p, reason=r) for p, r in a.denials],
        holds=[PolicyReason(policy=p, reason=r) for p, r in a.holds],
        applies=applies,
        placement_rules=rules,
        gpu_types=sorted(a.gpu_types) if a.gpu_types is not None else None,
        max_runtime_seconds=a.runtime_limit_s,
        max_runtime_source=a.runtime_limit_source,
        estimated_cost=CostView(gpus=est.gpus, runtime_seconds=est.runtime_s, low=est.low,
                                high=est.high,
                                per_cluster={str(k): v for k, v in est.per_cluster.items()}),
        clusters_known=clusters is not None,
        eligible_clusters=eligible,
        ineligible=ineligible,
        summary=summary,
        policies_digest=policies.digest,
    )
