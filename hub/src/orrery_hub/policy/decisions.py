"""What the engine decides: plain frozen values the hub stores, returns and shows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from orrery.ids import ClusterName
from orrery_hub.policy.cost import CostEstimate
from orrery_hub.policy.facts import ClusterFacts
from orrery_hub.policy.guardrail import Denial


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

    def eligible(self, clusters: Sequence[ClusterFacts]) -> list[ClusterName]:
        if self.allowed_clusters is None:
            return [c.name for c in clusters]
        return [c.name for c in clusters if c.name in self.allowed_clusters]


@dataclass(frozen=True, slots=True)
class RuntimeStop:
    reason: str  # for the job's Failed status
    limit_s: float
    source: str


