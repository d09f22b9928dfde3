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
scheduler's order (priority, then submission) and charges each job's pending GPUs and
estimated cost as if it were placed, so two jobs can never together break a quota in one
pass. That is conservative: a job charged but not placed (no free GPUs) holds its share
until the next pass recomputes usage.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from orrery.duration import format_duration
from orrery.ids import ClusterName, JobId
from orrery_hub.policy.cost import (
    CostEstimate,
    budgets_for,
    cluster_price,
    cost_scores,
    effective_runtime_s,
    estimate_cost,
    period_end,
)
from orrery_hub.policy.facts import ClusterFacts, JobFacts, Period, Usage, team_text
from orrery_hub.policy.guardrail import (
    Denial,
    QuotaKey,
    admission_denials,
    allowed_gpu_types,
    quota_check,
    runtime_limit,
)
from orrery_hub.policy.placement import PlacementVerdict, conflict_summary, evaluate
from orrery_hub.policy.policyset import GuardrailRule, PlacementRule, PolicySet


@dataclass(frozen=True, slots=True)
class Admission:
    decision: Literal["admitted", "denied", "held"]
    denials: tuple[Denial, ...]  # (policy, reason) for each policy that refuses the job
    holds: tuple[Denial, ...]  # (policy, reason) for each budget that holds it back
    estimate: CostEstimate
    gpu_types: frozenset[str] | None  # after guardrails narrowed them
    runtime_limit_s: float | None  # the max-runtime guardrail, for the hub to enforce
    runtime_limit_source: str | None

    @property
    def admitted(self) -> bool:
        return self.decision == "admitted"

    def message(self) -> str:
        """One line for a 403 or a CLI: every policy and why."""
        items = self.denials or self.holds
        return "; ".join(f"{ref}: {why}" for ref, why in items)


@dataclass(frozen=True, slots=True)
class Constraints:
    """Exactly what the scheduler's ``JobRequest`` takes, plus why and what it costs."""

    allowed_clusters: frozenset[ClusterName] | None  # None: no policy restricts the job
    denied_reasons: Mapping[ClusterName, str]
    cluster_scores: Mapping[ClusterName, float]
    gpu_types: frozenset[str] | None  # use as JobRequest.gpu_types
    blocked: tuple[str, ...] = ()  # quota/budget reasons that keep it off every cluster now
    summary: str | None = None  # one line when no cluster is left, e.g. a placement conflict
    estimate: CostEstimate | None = None
    quota_charge: tuple[QuotaKey, ...] = field(default=(), repr=False)

    def eligible(self, clusters: Sequence[ClusterFacts]) -> list[ClusterName]:
        if self.allowed_clusters is None:
            return [c.name for c in clusters]
        return [c.name for c in clusters if c.name in self.allowed_clusters]


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
) -> Admission:
    """Decide at submit. Denied: a guardrail forbids the job outright, or a ``deny`` budget
    cannot take even its cheapest placement. Held: a ``hold`` budget cannot take it now
    (queue it; it waits with that reason). ``clusters`` sharpens the cost estimate."""
    m = policies.matching(job)
    denials = admission_denials(job, m.guardrails)
    types, _ = allowed_gpu_types(job, m.guardrails)
    limit = runtime_limit(job, m.guardrails)
    runtime = effective_runtime_s(job, limit.seconds if limit else None)
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


@dataclass(frozen=True, slots=True)
class RuntimeStop:
    reason: str  # for the job's Failed status
    limit_s: float
    source: str


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


class _Pass:
    """Memo and ledger for one set of clusters: placement verdicts per set of applying
    rules, quota and budget use as jobs are charged in order."""

    def __init__(self, clusters: Sequence[ClusterFacts], policies: PolicySet, usage: Usage):
        self.clusters = tuple(clusters)
        self.policies = policies
        self.usage = usage
        self.verdicts: dict[tuple[PlacementRule, ...], PlacementVerdict] = {}
        self.static: dict[tuple[object, ...], Constraints] = {}
        self.gpus: dict[QuotaKey, int] = {}
        self.spend: dict[tuple[str, Period], float] = {}

    def used(self, key: QuotaKey) -> int:
        got = self.gpus.get(key)
        return got if got is not None else self.usage.gpus(key[0], key[1])

    def spent(self, team: str, period: Period) -> float:
        got = self.spend.get((team, period))
        return got if got is not None else self.usage.spent(team, period)

    def verdict(self, rules: tuple[PlacementRule, ...]) -> PlacementVerdict:
        v = self.verdicts.get(rules)
        if v is None:
            v = self.verdicts[rules] = evaluate(rules, self.clusters)
        return v

    def static_constraints(
        self, job: JobFacts, rules: tuple[PlacementRule, ...], guards: tuple[GuardrailRule, ...]
    ) -> Constraints:
        """What depends only on the job's profile and GPU types, not on the ledger."""
        key = (rules, guards, job.gpu_types, job.gpus_per_slice > 0)
        hit = self.static.get(key)
        if hit is not None:
            return hit
        v = self.verdict(rules)
        types, narrowed_by = allowed_gpu_types(job, guards)
        reasons = dict(v.reasons)
        allowed = set(v.allowed)
        restricted = v.restricted
        if job.gpus_per_slice > 0 and types is not None and narrowed_by:
            # A guardrail took types away: say so on the clusters it rules out, rather than
            # leave the scheduler's bare "no H100 GPUs".
            restricted = True
            for c in self.clusters:
                if c.name in allowed and not c.gpu_types & types:
                    allowed.discard(c.name)
                    reasons[c.name] = (f"no {'/'.join(sorted(types))} GPUs, the only types "
                                       f"{' and '.join(narrowed_by)} allows")
        scores = dict(v.scores)
        for name, s in cost_scores(self.policies,
                                   (c for c in self.clusters if c.name in allowed), types).items():
            scores[name] = scores.get(name, 0.0) + s
        summary = conflict_summary(rules, v) if restricted and not allowed else None
        out = Constraints(
            allowed_clusters=frozenset(allowed) if restricted else None,
            denied_reasons=reasons, cluster_scores=scores, gpu_types=types, summary=summary,
        )
        self.static[key] = out
        return out

    def constrain(self, job: JobFacts, *, charge: bool) -> Constraints:
        m = self.policies.matching(job)
        base = self.static_constraints(job, m.placements, m.guardrails)
        quotas = any(g.quota_gpus is not None for g in m.guardrails)
        budgets = budgets_for(job.team, self.policies) if self.policies.budgets else []
        if not quotas and not budgets:
            return base
        if base.allowed_clusters is not None and not base.allowed_clusters:
            return base  # nowhere to go: charge nothing
        blocked: list[str] = []
        q = quota_check(job, m.guardrails, self.used)
        if q.blocked:
            blocked.append(q.blocked)
        allowed = (set(base.allowed_clusters) if base.allowed_clusters is not None
                   else {c.name for c in self.clusters})
        reasons = dict(base.denied_reasons)
        restricted = base.allowed_clusters is not None
        estimate: CostEstimate | None = None
        if budgets and job.gpus_per_slice > 0:
            limit = runtime_limit(job, m.guardrails)
            runtime = effective_runtime_s(job, limit.seconds if limit else None)
            hours = runtime / 3600.0
            gpus = job.pending_gpus
            per: dict[ClusterName, float] = {}
            for c in self.clusters:
                if c.name in allowed:
                    price = cluster_price(self.policies, c, base.gpu_types)
                    if price is not None:
                        per[c.name] = gpus * price * hours
            for b in budgets:
                left = b.limit - self.spent(job.team, b.period)
                for name, cost in per.items():
                    if cost > left and name in allowed:
                        allowed.discard(name)
                        restricted = True
                        reasons[name] = (f"estimated ${cost:,.2f} exceeds {team_text(job.team)}"
                                         f"'s {b.period} budget: ${max(left, 0.0):,.2f} of "
                                         f"${b.limit:,.2f} left ({b.ref})")
            priced = [per[n] for n in allowed if n in per]
            estimate = CostEstimate(gpus, runtime, min(priced, default=None),
                                    max(priced, default=None), per)
            if restricted and not allowed and not blocked:
                blocked.append(f"{team_text(job.team)} budget cannot take this job on any "
                               "priced cluster now")
        if blocked:
            for c in self.clusters:
                if c.name in allowed:
                    reasons[c.name] = "; ".join(blocked)
            return Constraints(frozenset(), reasons, {}, base.gpu_types, tuple(blocked),
                               "; ".join(blocked), estimate)
        if charge:
            for key in q.charge:
                self.gpus[key] = self.used(key) + job.pending_gpus
            if estimate is not None and estimate.high is not None:
                for b in budgets:
                    k = (job.team, b.period)
                    self.spend[k] = self.spent(job.team, b.period) + estimate.high
        if not restricted:
            return Constraints(None, reasons, base.cluster_scores, base.gpu_types, (), None,
                               estimate, q.charge)
        scores = {n: s for n, s in base.cluster_scores.items() if n in allowed}
        return Constraints(frozenset(allowed), reasons, scores, base.gpu_types, (),
                           None, estimate, q.charge)


def constraints(
    job: JobFacts,
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
    usage: Usage,
) -> Constraints:
    """Where one job may run now, and why not elsewhere (``orrery policy check``)."""
    return _Pass(clusters, policies, usage).constrain(job, charge=False)


def scheduler_order(jobs: Sequence[JobFacts]) -> list[JobFacts]:
    """The scheduler's order (``orrery_hub.scheduler.order``): priority, then submission."""
    return sorted(jobs, key=lambda j: (-j.priority, j.seq))


def constraints_for_pass(
    jobs: Sequence[JobFacts],
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
    usage: Usage,
) -> dict[JobId, Constraints]:
    """Constraints for every pending job of one scheduling pass, keyed by job id.

    Jobs are charged against quotas and budgets in the scheduler's order, so the jobs it
    may place together never exceed a quota or budget."""
    p = _Pass(clusters, policies, usage)
    out: dict[JobId, Constraints] = {}
    for job in scheduler_order(jobs):
        if job.id is None:
            raise ValueError(f"job {job.name!r} has no id; a pass needs stored jobs")
        out[job.id] = p.constrain(job, charge=True)
    return out
