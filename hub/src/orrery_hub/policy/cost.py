"""Prices, cost estimates, budgets and cost-aware scores.

Precedence (also in ``policies/README.md``): a price set for a cluster by exact name beats
one set by a glob; among globs the first in load order (files by name, documents and
entries in file order) wins. Where a cluster has both, ``spot: false`` (on-demand) prices
estimates unless the cluster is a spot cluster: budgets are checked against the price a
job may really pay. A GPU type without a price costs nothing in estimates (and says so).

An estimate is GPUs x price per GPU-hour x the job's runtime limit (its own maxRuntime, or
the guardrail's, or the manifest default of 24h).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from orrery.ids import ClusterName
from orrery.manifest import DEFAULT_MAX_RUNTIME_S
from orrery_hub.policy.facts import ClusterFacts, JobFacts, Period
from orrery_hub.policy.policyset import BudgetRule, PolicySet, PriceRule


def price_of(
    policies: PolicySet, cluster: str, gpu_type: str, *, spot: bool = False
) -> float | None:
    """Price per GPU-hour of ``gpu_type`` on ``cluster``; the other kind (spot/on-demand)
    where the asked one is not set; None where neither is. For accounting and estimates."""
    other: PriceRule | None = None
    for p in policies.prices:
        if p.gpu_type != gpu_type or not p.cluster.matches(cluster):
            continue
        if p.spot == spot:
            return p.per_gpu_hour
        if other is None:
            other = p
    return other.per_gpu_hour if other is not None else None


def cluster_price(
    policies: PolicySet, cluster: ClusterFacts, types: frozenset[str] | None
) -> float | None:
    """The lowest price of any GPU type the job may use that the cluster has."""
    if not policies.prices:
        return None
    key = (cluster.name, cluster.gpu_types, cluster.spot, types)
    memo = policies._prices
    if key in memo:
        return memo[key]
    candidates = cluster.gpu_types if types is None else cluster.gpu_types & types
    prices = [
        p for t in candidates
        if (p := price_of(policies, cluster.name, t, spot=cluster.spot)) is not None
    ]
    if len(memo) >= _PRICES_MAX:
        memo.clear()  # bounded: cluster names and type sets seen over a long life
    found = memo[key] = min(prices) if prices else None
    return found


_PRICES_MAX = 100_000


def effective_runtime_s(job: JobFacts, limit_s: float | None) -> float:
    return limit_s if limit_s is not None else DEFAULT_MAX_RUNTIME_S


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """What the job would cost if it ran its whole runtime limit."""

    gpus: int
    runtime_s: float
    low: float | None  # cheapest placement; None: no price known for its GPU types
    high: float | None  # dearest placement
    per_cluster: dict[ClusterName, float]  # where clusters were given and priced

    def text(self) -> str:
        if self.low is None or self.high is None:
            return "no price known for its GPU types"
        if self.low == self.high:
            return f"${self.low:,.2f}"
        return f"${self.low:,.2f} to ${self.high:,.2f}"


def estimate_cost(
    job: JobFacts,
    policies: PolicySet,
    *,
    gpus: int,
    types: frozenset[str] | None,
    runtime_s: float,
    clusters: Sequence[ClusterFacts] | None = None,
) -> CostEstimate:
    """``gpus`` x price x ``runtime_s``, per cluster where ``clusters`` are given, else over
    every price set for the job's GPU types (the hub knows its clusters; an offline check
    does not)."""
    hours = runtime_s / 3600.0
    per: dict[ClusterName, float] = {}
    if clusters is not None and policies.prices:  # no price rule: no cluster has a price
        for c in clusters:
            price = cluster_price(policies, c, types)
            if price is not None:
                per[c.name] = gpus * price * hours
        values: Iterable[float] = per.values()
    else:
        # No clusters known: every price set for the job's types, on-demand ones only where
        # there are any (spot capacity is not a job's to count on), as the README says.
        usable = [p for p in policies.prices if types is None or p.gpu_type in types]
        on_demand = [p for p in usable if not p.spot]
        values = [gpus * p.per_gpu_hour * hours for p in (on_demand or usable)]
    vals = list(values)
    if job.gpus_per_slice == 0:
        vals = [0.0]
    return CostEstimate(gpus, runtime_s, min(vals) if vals else None,
                        max(vals) if vals else None, per)


def budgets_for(team: str, policies: PolicySet) -> list[BudgetRule]:
    return [b for b in policies.budgets if b.team.matches(team)]


def period_start(period: Period, now: float) -> float:
    """Start of the current budget period (UTC calendar day or month) for ``now``."""
    t = datetime.fromtimestamp(now, tz=UTC)
    start = t.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "month":
        start = start.replace(day=1)
    return start.timestamp()


def period_end(period: Period, now: float) -> float:
    t = datetime.fromtimestamp(period_start(period, now), tz=UTC)
    if period == "day":
        return t.timestamp() + 86400.0
    year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
    return t.replace(year=year, month=month).timestamp()


def cost_scores(
    weight: float, prices: Mapping[ClusterName, float]
) -> dict[ClusterName, float]:
    """Cheaper clusters score higher: ``weight x (1 - price / dearest price)``, so the
    dearest gets 0, a free one the full weight, and unpriced clusters 0."""
    if weight <= 0 or not prices:
        return {}
    top = max(prices.values())
    if top <= 0:
        return {}
    return {name: weight * (1.0 - p / top) for name, p in prices.items() if p < top}


class PriceTable:
    """Prices of one set of clusters, looked up once per (cluster, GPU type) for a whole
    pass: ``price_of`` walks every price rule, a pass asks thousands of times."""

    def __init__(self, policies: PolicySet, clusters: Iterable[ClusterFacts]) -> None:
        self.by_cluster: dict[ClusterName, dict[str, float]] = {}
        for c in clusters:
            row: dict[str, float] = {}
            for t in c.gpu_types:
                p = price_of(policies, c.name, t, spot=c.spot)
                if p is not None:
                    row[t] = p
            self.by_cluster[c.name] = row

    def cluster_price(self, cluster: ClusterName, types: frozenset[str] | None) -> float | None:
        row = self.by_cluster.get(cluster)
        if not row:
            return None
        if types is None:
            return min(row.values())
        prices = [p for t, p in row.items() if t in types]
        return min(prices) if prices else None
