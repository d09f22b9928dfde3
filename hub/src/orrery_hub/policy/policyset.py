"""A loaded policy set: compiled rules, where each came from, and a digest of it all.

Immutable once built (``parse.build_policy_set``). The one mutable part is a memo of which
rules match which job *profile* (queue, team and the labels any policy looks at): jobs
that share a profile share the answer, so a pass over 10,000 jobs asks 200 policies only
as often as there are distinct profiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from orrery_hub.policy.facts import JobFacts, Period
from orrery_hub.policy.match import AnyOf, ClusterMatcher, Glob, JobMatcher

_MEMO_LIMIT = 65_536  # distinct profiles remembered; past it the memo starts over


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a document was written: ``policies/eu.yaml:12``."""

    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class PlacementRule:
    name: str
    origin: Origin
    match: JobMatcher
    require: ClusterMatcher | None
    forbid: ClusterMatcher | None
    prefer: tuple[tuple[ClusterMatcher, float], ...]

    @property
    def ref(self) -> str:
        return f"placement/{self.name}"


@dataclass(frozen=True, slots=True)
class GuardrailRule:
    name: str
    origin: Origin
    match: JobMatcher
    max_gpus_per_job: int | None
    max_slices: int | None
    allowed_gpu_types: frozenset[str] | None
    max_runtime_s: float | None
    quota_gpus: int | None
    quota_per: Literal["team", "queue"]
    max_priority: int | None = None  # priority ceiling: a member cannot outrank it
    queues: frozenset[str] | None = None  # the queues a matching job may use

    @property
    def ref(self) -> str:
        return f"guardrail/{self.name}"


@dataclass(frozen=True, slots=True)
class PriceRule:
    policy: str
    cluster: Glob
    gpu_type: str
    per_gpu_hour: float
    spot: bool


@dataclass(frozen=True, slots=True)
class LinkRule:
    """From a Cost policy's ``links`` (gbps) or ``egress`` (per_gb): regions as globs."""

    policy: str
    source: str
    dest: str
    gbps: float | None = None
    per_gb: float | None = None


@dataclass(frozen=True, slots=True)
class BudgetRule:
    policy: str
    team: AnyOf
    period: Period
    limit: float
    action: Literal["deny", "hold"]

    @property
    def ref(self) -> str:
        return f"cost/{self.policy}"


@dataclass(frozen=True, slots=True)
class Source:
    """One policy file: its path, the sha256 of its bytes, and what it defines."""

    path: str
    sha256: str
    policies: tuple[str, ...]  # "placement/eu-residency", in file order


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    """One policy in force, for ``GET /v1/policies`` and ``orrery policy list``."""

    kind: str
    name: str
    origin: Origin
    sha256: str  # of the file it came from


@dataclass(frozen=True, slots=True)
class Matched:
    placements: tuple[PlacementRule, ...]
    guardrails: tuple[GuardrailRule, ...]
    # Positions of those rules in the set: equal keys, equal rules (cheap to hash).
    placement_key: tuple[int, ...] = ()
    guardrail_key: tuple[int, ...] = ()


IndexKey = tuple[str, str, str]  # ("team", "", value) / ("queue", "", v) / ("label", key, v)


class RuleIndex:
    """Which rules could match a job, found by dict lookups instead of asking every rule.

    A rule whose ``match`` names a team, a queue or a label by plain value (no glob) is
    filed under one such value; the rest are always candidates. Candidates are then
    checked in full, so the index only saves work and never changes an answer.
    """

    def __init__(self, matchers: Sequence[JobMatcher]) -> None:
        self.always: list[int] = []
        self.by_value: dict[IndexKey, list[int]] = {}
        keys: set[str] = set()
        for i, m in enumerate(matchers):
            filed = _filing(m)
            if filed is None:
                self.always.append(i)
                continue
            for k in filed:
                self.by_value.setdefault(k, []).append(i)
                if k[0] == "label":
                    keys.add(k[1])
        self.label_keys = tuple(sorted(keys))

    def candidates(self, labels: Mapping[str, str], queue: str, team: str | None) -> list[int]:
        found = list(self.always)
        get = self.by_value.get
        for k in (("team", "", team or ""), ("queue", "", queue)):
            hit = get(k)
            if hit:
                found += hit
        for key in self.label_keys:
            value = labels.get(key)
            if value is not None:
                hit = get(("label", key, value))
                if hit:
                    found += hit
        found.sort()
        return found


def _filing(m: JobMatcher) -> list[IndexKey] | None:
    """The plain values a matcher can be filed under, or None: check it for every job."""
    if m.team is not None and all(g.regex is None for g in m.team.globs):
        return [("team", "", g.text) for g in m.team.globs]
    if m.queue is not None and all(g.regex is None for g in m.queue.globs):
        return [("queue", "", g.text) for g in m.queue.globs]
    for key, want in m.labels:
        if all(g.regex is None for g in want.globs):
            return [("label", key, g.text) for g in want.globs]
    return None


ProfileKey = tuple[str, str, tuple[str | None, ...]]


@dataclass(frozen=True, slots=True)
class PolicySet:
    sources: tuple[Source, ...]
    entries: tuple[PolicyEntry, ...]
    placements: tuple[PlacementRule, ...]
    guardrails: tuple[GuardrailRule, ...]
    prices: tuple[PriceRule, ...]  # exact cluster names first, then globs, each in load order
    budgets: tuple[BudgetRule, ...]
    cost_weight: float  # the largest placementWeight of any Cost policy
    digest: str  # sha256 over every source's path and hash: equal digests, equal sets
    label_keys: tuple[str, ...]  # job labels any policy's match looks at
    # Between regions (globs): bandwidth and egress prices, for placing jobs on their data.
    links: tuple[LinkRule, ...] = ()
    delay_cost_per_gpu_hour: float | None = None
    _memo: dict[ProfileKey, Matched] = field(
        default_factory=dict, compare=False, repr=False, hash=False
    )
    # cost.cluster_price's answers: a hub that knows 1,000 clusters prices each of them for
    # every admission decision otherwise (O(clusters x prices) a submission).
    _prices: dict[tuple[str, frozenset[str], bool, frozenset[str] | None], float | None] = (
        field(default_factory=dict, compare=False, repr=False, hash=False)
    )
    _placement_index: RuleIndex = field(init=False, compare=False, repr=False)
    _guardrail_index: RuleIndex = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Built here rather than by the caller so that every PolicySet has them.
        object.__setattr__(self, "_placement_index", RuleIndex([r.match for r in self.placements]))
        object.__setattr__(self, "_guardrail_index", RuleIndex([r.match for r in self.guardrails]))

    @property
    def empty(self) -> bool:
        return not (self.placements or self.guardrails or self.prices or self.budgets)

    def profile(self, job: JobFacts) -> ProfileKey:
        labels: Mapping[str, str] = job.labels
        return (job.queue, job.team, tuple(labels.get(k) for k in self.label_keys))

    def matching(self, job: JobFacts) -> Matched:
        """The placements and guardrails that apply to ``job``, in load order."""
        key = self.profile(job)
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        team = job.labels.get("team")
        pk = tuple(
            i for i in self._placement_index.candidates(job.labels, job.queue, team)
            if self.placements[i].match.matches(job.labels, job.queue, team)
        )
        gk = tuple(
            i for i in self._guardrail_index.candidates(job.labels, job.queue, team)
            if self.guardrails[i].match.matches(job.labels, job.queue, team)
        )
        found = Matched(
            placements=tuple(self.placements[i] for i in pk),
            guardrails=tuple(self.guardrails[i] for i in gk),
            placement_key=pk,
            guardrail_key=gk,
        )
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = found
        return found
