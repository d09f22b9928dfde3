"""Placement policies: which clusters a job may use, and which it would rather use.

Precedence (also in ``policies/README.md``):

1. Every Placement whose ``match`` fits the job applies; none overrides another.
2. A cluster is allowed only if it satisfies the ``require`` of *every* applying Placement
   (requires intersect) and the ``forbid`` of *none* (forbids add up). Forbid therefore
   beats require: a cluster both required and forbidden is forbidden.
3. ``prefer`` never allows or forbids: the weights of every applying preference a cluster
   matches are summed into its score, and the scheduler prefers higher scores among the
   clusters that fit equally.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from orrery.ids import ClusterName
from orrery_hub.policy.facts import ClusterFacts
from orrery_hub.policy.policyset import PlacementRule


@dataclass(frozen=True, slots=True)
class PlacementVerdict:
    restricted: bool  # some applying rule requires or forbids: allowed is authoritative
    allowed: frozenset[ClusterName]
    reasons: dict[ClusterName, str]  # for each cluster not allowed, every rule that says no
    scores: dict[ClusterName, float]  # allowed clusters with a non-zero preference


def evaluate(rules: Sequence[PlacementRule], clusters: Sequence[ClusterFacts]) -> PlacementVerdict:
    restricted = any(r.require is not None or r.forbid is not None for r in rules)
    allowed: set[ClusterName] = set()
    reasons: dict[ClusterName, str] = {}
    scores: dict[ClusterName, float] = {}
    for c in clusters:
        why: list[str] = []
        for r in rules:
            if r.forbid is not None and r.forbid.matches(c.name, c.labels):
                why.append(f"forbidden by {r.ref} (forbids {r.forbid.text()})")
            if r.require is not None and not r.require.matches(c.name, c.labels):
                why.append(
                    f"forbidden by {r.ref} (requires {r.require.text()}; "
                    f"has {r.require.why_not(c.name, c.labels)})"
                )
        if why:
            reasons[c.name] = "; ".join(why)
            continue
        allowed.add(c.name)
        score = sum(w for r in rules for sel, w in r.prefer if sel.matches(c.name, c.labels))
        if score:
            scores[c.name] = score
    return PlacementVerdict(restricted, frozenset(allowed), reasons, scores)


def conflict_summary(rules: Sequence[PlacementRule], verdict: PlacementVerdict) -> str | None:
    """One line for "no cluster is left", naming the rules that leave none together."""
    if verdict.allowed or not verdict.reasons:
        return None
    refs = [r.ref for r in rules if r.require is not None or r.forbid is not None]
    if len(refs) == 1:
        return f"no cluster satisfies {refs[0]}"
    return f"no cluster satisfies {', '.join(refs[:-1])} and {refs[-1]} together"
