"""The policy engine's decisions: admit a job, constrain where it may run, stop it in time.

Pure: facts in, plain data out. The scheduler never sees a policy, only the
``JobRequest`` fields this module fills (``allowed_clusters``, ``denied_reasons``,
``cluster_scores``, and ``gpu_types`` when a guardrail narrows them).

    admit(job, policies, usage, now)            at submit: admitted, denied (403) or held
    constraints(job, clusters, policies, usage) one job, for ``orrery policy check``
    constraints_for_pass(jobs, clusters, policies, usage)
                                                every pending job, once per scheduling pass
    runtime_exceeded(job, policies, started_at, now)
                                                the max-runtime guardrail, for running jobs

Quotas and budgets are about jobs together. ``constraints_for_pass`` walks the jobs in the
scheduler's default order (priority, then submission) and charges each job it lets through
with its pending GPUs and estimated cost as if it were placed. So the jobs let through
together never break a quota or budget, whichever of them the scheduler then places and in
whatever order (fair share included): the order only decides who gets the room. That is
conservative: a job charged but not placed (no free GPUs) holds its share until the next
pass recomputes usage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from orrery.duration import format_duration
from orrery.ids import JobId
from orrery_hub.policy.cost import (
    budgets_for,
    effective_runtime_s,
    estimate_cost,
    period_end,
)
from orrery_hub.policy.decisions import Admission, Constraints, RuntimeStop
from orrery_hub.policy.facts import ClusterFacts, JobFacts, Period, Usage, team_text
from orrery_hub.policy.guardrail import (
    Denial,
    admission_denials,
    allowed_gpu_types,
    runtime_limit,
)
from orrery_hub.policy.ledger import Evaluator
from orrery_hub.policy.policyset import PolicySet

__all__ = ["Admission", "Constraints", "Evaluator", "RuntimeStop", "admit", "admit_key",
           "constraints", "constraints_for_pass", "runtime_exceeded"]


def _period_text(period: Period, now: float) -> str:
    end = datetime.fromtimestamp(period_end(period, now), tz=UTC)
    return f"{period} budget (resets {end:%Y-%m-%d})"


def admit(
    job: JobFacts,
    policies: PolicySet,
    usage: Usage,
    now: float,
    *,
    clusters: Sequence[ClusterFacts] | None = None,
    evaluator: Evaluator | None = None,
) -> Admission:
    """Decide at submit. Denied: a guardrail forbids the job outright, or a ``deny`` budget
    cannot take even its cheapest placement. Held: a ``hold`` budget cannot take it now
    (queue it; it waits with that reason). ``clusters`` (the hub's inventory) sharpens the
    cost estimate to the clusters placement allows; without them it ranges over every price
    set for the job's GPU types. ``evaluator``: one already built for these policies and
    clusters (admitting a batch builds it once)."""
    m = policies.matching(job)
    denials = admission_denials(job, m.guardrails)
    types, _ = allowed_gpu_types(job, m.guardrails)
    limit = runtime_limit(job, m.guardrails)
    runtime = effective_runtime_s(job, limit.seconds if limit else None)
    if clusters is not None:
        # Price only where placement lets it run: a forbidden cheap cluster is no saving.
        ev = evaluator if evaluator is not None else Evaluator(policies, clusters)
        allowed = ev.profile(job).base.allowed_clusters
        if allowed is not None:
            clusters = [c for c in clusters if c.name in allowed]
    estimate = estimate_cost(job, policies, gpus=job.total_gpus, types=types,
                             runtime_s=runtime, clusters=clusters)
    holds: list[Denial] = []
    if estimate.low is not None and estimate.low > 0:
        for b in budgets_for(job.team, policies):
            left = b.limit - usage.spent(job.team, b.period)
            if estimate.low > left:
                reason = (f"estimated cost {estimate.text()} exceeds {team_text(job.team)}'s "
                          f"{_period_text(b.period, now)}: ${max(left, 0.0):,.2f} of "
                          f"${b.limit:,.2f} left")
                (denials if b.action == "deny" else holds).append((b.ref, reason))
    decision: Literal["admitted", "denied", "held"] = (
        "denied" if denials else "held" if holds else "admitted"
    )
    return Admission(decision, tuple(denials), tuple(holds), estimate, types,
                     limit.seconds if limit else None, limit.source if limit else None)


def admit_key(job: JobFacts, policies: PolicySet) -> tuple[object, ...]:
    """All that ``admit`` reads of ``job``: jobs with equal keys, decided against the same
    policies, usage, clusters and ``now``, get equal decisions (a batch decides each key
    once). Keep it in step with ``admit`` and what it calls."""
    return (policies.profile(job), job.slices, job.gpus_per_slice, job.gpu_types,
            job.max_runtime_s, job.priority)


def runtime_exceeded(
    job: JobFacts, policies: PolicySet, started_at: float, now: float
) -> RuntimeStop | None:
    """Whether a job that started running at ``started_at`` has run past its limit."""
    limit = runtime_limit(job, policies.matching(job).guardrails)
    if limit is None or now - started_at <= limit.seconds:
        return None
    return RuntimeStop(
        f"ran past its max runtime of {format_duration(limit.seconds)} ({limit.source})",
        limit.seconds, limit.source,
    )


def constraints(
    job: JobFacts,
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
    usage: Usage,
) -> Constraints:
    """Where one job may run now, and why not elsewhere (``orrery policy check``)."""
    return Evaluator(policies, clusters).constraints(job, usage)


def constraints_for_pass(
    jobs: Sequence[JobFacts],
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
    usage: Usage,
) -> dict[JobId, Constraints]:
    """Constraints for every pending job of one scheduling pass, keyed by job id.

    Jobs are charged against quotas and budgets in the scheduler's order, so the jobs it
    may place together never exceed a quota or budget."""
    return Evaluator(policies, clusters).constraints_for_pass(jobs, usage)
