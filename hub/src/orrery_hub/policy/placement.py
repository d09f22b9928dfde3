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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from orrery.ids import ClusterName
from orrery_hub.policy.facts import ClusterFacts
from orrery_hub.policy.policyset import PlacementRule


@dataclass(frozen=True, slots=True)
class PlacementVerdict:
    restricted: bool  # some applying rule requires or forbids: allowed is authoritative
    allowed: frozenset[ClusterName]
    reasons: Mapping[ClusterName, str]  # for each cluster not allowed, every rule that says no
    scores: Mapping[ClusterName, float]  # allowed clusters with a non-zero preference


@dataclass(frozen=True, slots=True)
class RuleOnClusters:
    """One rule against every cluster, computed once per set of clusters: jobs differ in
    which rules apply to them, not in what a rule says about a cluster."""

    restricts: bool
    denied: dict[ClusterName, str]
    prefers: dict[ClusterName, float]


def rule_on_clusters(r: PlacementRule, clusters: Sequence[ClusterFacts]) -> RuleOnClusters:
    denied: dict[ClusterName, str] = {}
    prefers: dict[ClusterName, float] = {}
    for c in clusters:
        why = []
        if r.forbid is not None and r.forbid.matches(c.name, c.labels):
            why.append(f"forbidden by {r.ref} (forbids {r.forbid.text()})")
        if r.require is not None and not r.require.matches(c.name, c.labels):
            why.append(f"forbidden by {r.ref} (requires {r.require.text()}; "
                       f"has {r.require.why_not(c.name, c.labels)})")
        if why:
            denied[c.name] = "; ".join(why)
        score = sum(w for sel, w in r.prefer if sel.matches(c.name, c.labels))
        if score:
            prefers[c.name] = score
    return RuleOnClusters(r.require is not None or r.forbid is not None, denied, prefers)


class JoinedReasons(Mapping[ClusterName, str]):
    """Each cluster's reasons from every rule that rules it out, joined when asked: built
    per job in O(rules), read only for the jobs whose reasons someone looks at."""

    def __init__(self, parts: tuple[dict[ClusterName, str], ...]) -> None:
        self._parts = parts
        self._keys: set[ClusterName] | None = None

    def __getitem__(self, key: ClusterName) -> str:
        found = [p[key] for p in self._parts if key in p]
        if not found:
            raise KeyError(key)
        return "; ".join(found)

    def _all(self) -> set[ClusterName]:
        if self._keys is None:
            self._keys = set().union(*self._parts)
        return self._keys

    def __iter__(self) -> Iterator[ClusterName]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, key: object) -> bool:
        return any(key in p for p in self._parts)


def combine(
    parts: Sequence[RuleOnClusters], every: frozenset[ClusterName]
) -> PlacementVerdict:
    """The verdict of several rules together (the precedence above)."""
    restricting = [p for p in parts if p.restricts and p.denied]
    restricted = any(p.restricts for p in parts)
    if not restricting:
        allowed = every
        reasons: Mapping[ClusterName, str] = {}
    else:
        allowed = every.difference(*(p.denied for p in restricting))
        reasons = (restricting[0].denied if len(restricting) == 1
                   else JoinedReasons(tuple(p.denied for p in restricting)))
    scores: dict[ClusterName, float] = {}
    for p in parts:
        for name, w in p.prefers.items():
            if name in allowed:
                scores[name] = scores.get(name, 0.0) + w
    return PlacementVerdict(restricted, allowed, reasons, {n: s for n, s in scores.items() if s})


def conflict_summary(rules: Sequence[PlacementRule], verdict: PlacementVerdict) -> str | None:
    """One line for "no cluster is left", naming the rules that leave none together."""
    if verdict.allowed or not verdict.reasons:
        return None
    refs = [r.ref for r in rules if r.require is not None or r.forbid is not None]
    if len(refs) == 1:
        return f"no cluster satisfies {refs[0]}"
    return f"no cluster satisfies {', '.join(refs[:-1])} and {refs[-1]} together"
