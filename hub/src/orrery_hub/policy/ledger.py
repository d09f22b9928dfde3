"""The evaluator of one policy set over one set of clusters, and each pass's ledger.

An :class:`Evaluator` lives as long as its policy set and its clusters (names, labels and
GPU types; not free GPUs): the hub keeps one and builds a new one when either changes
(``evaluator.serves(policies, clusters)``). What it computes is memoised across passes:

- per rule, what it says about every cluster (once);
- per set of applying rules, the allowed clusters (set operations) and scores;
- per *profile* (applying rules, GPU types), the static constraints: placement, GPU-type
  narrowing, cost scores, and the sorted prices of the allowed clusters;
- per job id, its profile (a job's labels, queue and types never change).

So a steady-state pass costs, per job, a dict lookup plus, where a quota or budget applies,
the quota check and a binary search over the profile's sorted prices.

Quotas and budgets are charged as jobs are constrained, in the order given: each job that
is let through is counted as if it were placed, so the jobs let through together never
exceed a quota or budget, whatever the scheduler then places.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import attrgetter

from orrery.ids import ClusterName, JobId
from orrery_hub.policy.cost import (
    CostEstimate,
    PriceTable,
    budgets_for,
    cost_scores,
    effective_runtime_s,
)
from orrery_hub.policy.decisions import Constraints
from orrery_hub.policy.facts import NO_TEAM, ClusterFacts, JobFacts, Period, Usage, team_text
from orrery_hub.policy.guardrail import (
    QuotaKey,
    allowed_gpu_types,
    quota_reason,
)
from orrery_hub.policy.placement import (
    PlacementVerdict,
    RuleOnClusters,
    combine,
    conflict_summary,
    rule_on_clusters,
)
from orrery_hub.policy.policyset import BudgetRule, GuardrailRule, Matched, PolicySet


class _SameReason(Mapping[ClusterName, str]):
    """Reasons for a job blocked everywhere: the profile's own reasons, and one reason for
    every other cluster. O(1) to build, since quota blocks can hit thousands of jobs."""

    def __init__(self, own: Mapping[ClusterName, str], names: Sequence[ClusterName],
                 reason: str) -> None:
        self._own = own
        self._names = names
        self._reason = reason

    def __getitem__(self, key: ClusterName) -> str:
        own = self._own.get(key)
        if own is not None:
            return own
        if key in self._names:
            return self._reason
        raise KeyError(key)

    def __iter__(self) -> Iterator[ClusterName]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass(frozen=True, slots=True)
class _Profile:
    base: Constraints  # placement, GPU types and cost scores: what no ledger changes
    guards: tuple[GuardrailRule, ...]
    quota_rules: tuple[GuardrailRule, ...]
    guard_runtime_s: float | None  # the shortest maxRuntime of the applying guardrails
    allowed: frozenset[ClusterName]  # clusters the base allows, concretely
    priced: tuple[tuple[float, ClusterName], ...]  # allowed clusters with a price, cheapest first
    price_values: tuple[float, ...]  # the prices of ``priced``, for bisect


Priced = tuple[tuple[float, ClusterName], ...]  # (price, cluster), cheapest first
_Prices = tuple[dict[ClusterName, float], Priced, tuple[float, ...]]
_Static = tuple[Constraints, frozenset[ClusterName], Priced, tuple[float, ...]]

_JOB_MEMO_LIMIT = 200_000  # job ids remembered; past it the memo starts over


class Ledger:
    """Quota and budget use within one pass, starting from what is in use."""

    def __init__(self, usage: Usage) -> None:
        self.usage = usage
        self.gpus: dict[QuotaKey, int] = {}
        self.spend: dict[tuple[str, Period], float] = {}

    def used(self, key: QuotaKey) -> int:
        got = self.gpus.get(key)
        return got if got is not None else self.usage.gpus(key[0], key[1])

    def spent(self, team: str, period: Period) -> float:
        got = self.spend.get((team, period))
        return got if got is not None else self.usage.spent(team, period)


class Evaluator:
    def __init__(self, policies: PolicySet, clusters: Sequence[ClusterFacts]) -> None:
        self.policies = policies
        # The caller's tuple: the very same (immutable) object serves at a glance.
        self._given = clusters if isinstance(clusters, tuple) else None
        self.clusters = tuple(clusters)
        self.names = tuple(c.name for c in self.clusters)
        self.every = frozenset(self.names)
        self.prices = PriceTable(policies, self.clusters) if policies.prices else None
        self.rules: dict[int, RuleOnClusters] = {}
        self.verdicts: dict[tuple[int, ...], PlacementVerdict] = {}
        self.profiles: dict[tuple[tuple[int, ...], tuple[int, ...], frozenset[str] | None, bool],
                            _Profile] = {}
        self.priced: dict[tuple[frozenset[ClusterName], frozenset[str] | None], _Prices] = {}
        self.statics: dict[tuple[object, ...], _Static] = {}
        self.lacking: dict[frozenset[str], frozenset[ClusterName]] = {}
        self.by_job: dict[str, _Profile] = {}
        self.team_budgets: dict[str, list[BudgetRule]] = {}
        self.blocked: dict[tuple[object, ...], tuple[_Profile, Constraints]] = {}

    def serves(self, policies: PolicySet, clusters: Sequence[ClusterFacts]) -> bool:
        """Whether this evaluator still answers for ``policies`` over ``clusters``."""
        return policies is self.policies and (
            clusters is self._given or tuple(clusters) == self.clusters
        )

    def budgets(self, team: str) -> list[BudgetRule]:
        got = self.team_budgets.get(team)
        if got is None:
            got = self.team_budgets[team] = budgets_for(team, self.policies)
        return got

    def _verdict(self, m: Matched) -> PlacementVerdict:
        v = self.verdicts.get(m.placement_key)
        if v is not None:
            return v
        parts = []
        for i in m.placement_key:
            part = self.rules.get(i)
            if part is None:
                part = self.rules[i] = rule_on_clusters(self.policies.placements[i],
                                                        self.clusters)
            parts.append(part)
        v = self.verdicts[m.placement_key] = combine(parts, self.every)
        return v

    def profile(self, job: JobFacts) -> _Profile:
        if job.id is not None:
            hit = self.by_job.get(job.id)
            if hit is not None:
                return hit
        m = self.policies.matching(job)
        key = (m.placement_key, m.guardrail_key, job.gpu_types, job.gpus_per_slice > 0)
        prof = self.profiles.get(key)
        if prof is None:
            prof = self.profiles[key] = self._build_profile(job, m)
        if job.id is not None:
            if len(self.by_job) >= _JOB_MEMO_LIMIT:
                self.by_job.clear()
            self.by_job[job.id] = prof
        return prof

    def _prices(
        self, allowed: frozenset[ClusterName], types: frozenset[str] | None
    ) -> _Prices:
        key = (allowed, types)
        hit = self.priced.get(key)
        if hit is not None:
            return hit
        prices: dict[ClusterName, float] = {}
        if self.prices is not None:
            for n in self.names:
                if n in allowed:
                    p = self.prices.cluster_price(n, types)
                    if p is not None:
                        prices[n] = p
        priced = tuple(sorted((p, n) for n, p in prices.items()))
        out = (prices, priced, tuple(p for p, _ in priced))
        self.priced[key] = out
        return out

    def _lacking(self, types: frozenset[str]) -> frozenset[ClusterName]:
        hit = self.lacking.get(types)
        if hit is None:
            hit = self.lacking[types] = frozenset(
                c.name for c in self.clusters if not c.gpu_types & types)
        return hit

    def _build_profile(self, job: JobFacts, m: Matched) -> _Profile:
        types, narrowed_by = allowed_gpu_types(job, m.guardrails)
        gpus = job.gpus_per_slice > 0
        # What depends on the placement rules and the types only, shared by every guardrail
        # combination that ends with the same types.
        key = (m.placement_key, types, tuple(narrowed_by), gpus)
        static = self.statics.get(key)
        if static is None:
            static = self.statics[key] = self._build_static(m, types, narrowed_by, gpus)
        base, allowed, priced, price_values = static
        return _Profile(
            base=base, guards=m.guardrails,
            quota_rules=tuple(g for g in m.guardrails if g.quota_gpus is not None),
            guard_runtime_s=min((g.max_runtime_s for g in m.guardrails
                                 if g.max_runtime_s is not None), default=None),
            allowed=allowed, priced=priced, price_values=price_values,
        )

    def _build_static(
        self, m: Matched, types: frozenset[str] | None, narrowed_by: list[str], gpus: bool
    ) -> _Static:
        v = self._verdict(m)
        reasons: Mapping[ClusterName, str] = v.reasons
        allowed = v.allowed
        restricted = v.restricted
        if gpus and types is not None and narrowed_by:
            # A guardrail took types away: say so on the clusters it rules out, rather than
            # leave the scheduler's bare "no H100 GPUs".
            restricted = True
            out = allowed & self._lacking(types)
            if out:
                why = (f"no {'/'.join(sorted(types))} GPUs, the only types "
                       f"{' and '.join(narrowed_by)} allows")
                reasons = {**reasons, **dict.fromkeys(out, why)}
                allowed = allowed - out
        prices, priced, values = ({}, (), ()) if not gpus else self._prices(allowed, types)
        scores: Mapping[ClusterName, float] = v.scores
        extra = cost_scores(self.policies.cost_weight, prices)
        if extra:
            merged = dict(v.scores)
            for name, s in extra.items():
                merged[name] = merged.get(name, 0.0) + s
            scores = merged
        summary = conflict_summary(m.placements, v) if restricted and not allowed else None
        base = Constraints(
            allowed_clusters=allowed if restricted else None,
            denied_reasons=reasons, cluster_scores=scores, gpu_types=types, summary=summary,
        )
        return base, allowed, priced, values

    def _blocked(self, prof: _Profile, key: tuple[object, ...], reason: Callable[[], str],
                 estimate: CostEstimate | None = None) -> Constraints:
        """The constraints of a job kept off every cluster. Memoised: once a quota is full,
        every later job of that profile and size gets the very same answer."""
        memo_key = (id(prof), *key)
        hit = self.blocked.get(memo_key)
        if hit is not None and hit[0] is prof:
            return hit[1]
        text = reason()
        out = Constraints(frozenset(), _SameReason(prof.base.denied_reasons, self.names, text),
                          {}, prof.base.gpu_types, (text,), text, estimate)
        if len(self.blocked) >= _JOB_MEMO_LIMIT:
            self.blocked.clear()
        self.blocked[memo_key] = (prof, out)
        return out

    def constrain(self, job: JobFacts, ledger: Ledger, *, charge: bool) -> Constraints:
        prof = self.profile(job)
        base = prof.base
        team = job.labels.get("team", NO_TEAM)
        budgets = self.budgets(team) if self.policies.budgets else ()
        if not (prof.quota_rules or budgets) or not prof.allowed:
            return base  # no ledger applies, or nowhere to go: nothing to charge
        need = job.pending_gpus
        charge_keys: list[QuotaKey] = []
        for r in prof.quota_rules:
            key: QuotaKey = (r.quota_per, team if r.quota_per == "team" else job.queue)
            used = ledger.used(key)
            if used + need > (r.quota_gpus or 0):
                return self._blocked(prof, (r.name, *key, used, need),
                                     partial(quota_reason, r, key, used, need))
            if key not in charge_keys:
                charge_keys.append(key)
        excluded: dict[ClusterName, str] = {}
        estimate: CostEstimate | None = None
        if budgets and need > 0 and prof.priced:
            declared = job.max_runtime_s
            limit = prof.guard_runtime_s
            if declared is not None and (limit is None or declared < limit):
                limit = declared
            runtime = effective_runtime_s(job, limit)
            unit = need * runtime / 3600.0  # cost per $1 per GPU-hour
            cut = len(prof.priced)
            for b in budgets:
                left = b.limit - ledger.spent(team, b.period)
                idx = bisect_right(prof.price_values, left / unit) if left >= 0 else 0
                for price, name in prof.priced[idx:cut]:
                    excluded[name] = (
                        f"estimated ${unit * price:,.2f} exceeds {team_text(team)}'s "
                        f"{b.period} budget: ${max(left, 0.0):,.2f} of ${b.limit:,.2f} "
                        f"left ({b.ref})"
                    )
                cut = min(cut, idx)
            kept = prof.priced[:cut]
            estimate = CostEstimate(need, runtime, unit * kept[0][0] if kept else None,
                                    unit * kept[-1][0] if kept else None, {})
            if len(excluded) == len(prof.allowed):
                return self._blocked(
                    prof, ("budget", team, need, runtime, *(ledger.spent(team, b.period)
                                                            for b in budgets)),
                    lambda: (f"{team_text(team)} budget cannot take this job on any allowed "
                             f"cluster now: {next(iter(excluded.values()))}"),
                    estimate,
                )
        if charge:
            for key in charge_keys:
                ledger.gpus[key] = ledger.used(key) + need
            if estimate is not None and estimate.high is not None:
                for b in budgets:
                    k = (team, b.period)
                    ledger.spend[k] = ledger.spent(team, b.period) + estimate.high
        if not excluded:
            if estimate is None:
                return base
            return Constraints(base.allowed_clusters, base.denied_reasons, base.cluster_scores,
                               base.gpu_types, (), base.summary, estimate)
        allowed = prof.allowed.difference(excluded)
        return Constraints(allowed, {**base.denied_reasons, **excluded},
                           base.cluster_scores, base.gpu_types, (), None, estimate)

    def constraints_for_pass(
        self, jobs: Sequence[JobFacts], usage: Usage
    ) -> dict[JobId, Constraints]:
        """Every pending job of one pass, charged in the scheduler's default order."""
        ledger = Ledger(usage)
        out: dict[JobId, Constraints] = {}
        charged: list[JobFacts] = []
        has_budgets = bool(self.policies.budgets)
        for job in jobs:
            if job.id is None:
                raise ValueError(f"job {job.name!r} has no id; a pass needs stored jobs")
            prof = self.profile(job)
            if prof.quota_rules or (has_budgets and self.budgets(job.team)):
                charged.append(job)
            else:  # no quota or budget: its answer is its profile's, in any order
                out[job.id] = prof.base
        # Priority descending, then submission: two stable sorts on int keys, because tuple
        # keys allocate thousands of tracked objects and set off the garbage collector.
        charged.sort(key=attrgetter("seq"))
        charged.sort(key=attrgetter("priority"), reverse=True)
        for job in charged:
            out[JobId(str(job.id))] = self.constrain(job, ledger, charge=True)
        return out

    def constraints(self, job: JobFacts, usage: Usage) -> Constraints:
        return self.constrain(job, Ledger(usage), charge=False)
