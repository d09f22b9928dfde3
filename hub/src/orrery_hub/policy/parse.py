"""Policy text to a :class:`PolicySet`, or one error naming every problem with file and line.

Pure: the caller reads the files (``orrery_hub.admission.policyfiles``) and hands over
``(path, text)`` pairs. All or nothing: any problem in any file refuses the whole set, so
the caller keeps the set it had — a half-loaded set would silently drop a residency rule.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from orrery.document import BoundedLoader, measure
from orrery.errors import ManifestError
from orrery.manifest import problems_of
from orrery_hub.policy.match import AnyOf, ClusterMatcher, Glob, JobMatcher, compile_labels
from orrery_hub.policy.policyset import (
    BudgetRule,
    GuardrailRule,
    LinkRule,
    Origin,
    PlacementRule,
    PolicyEntry,
    PolicySet,
    PriceRule,
    Source,
)
from orrery_hub.policy.schema import (
    KINDS,
    MODEL_OF_KIND,
    ClusterSelector,
    CostDocument,
    GuardrailDocument,
    JobMatch,
    PlacementDocument,
    PolicyDocument,
)


@dataclass(frozen=True, slots=True)
class Issue:
    path: str
    line: int | None
    field: str  # "spec.require.clusterLabels", or "" for the whole document
    reason: str

    def where(self) -> str:
        at = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{at}: {self.field}" if self.field else at


class PolicyError(ManifestError):
    """Policy files refused. ``issues`` names each file, line, field and reason."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = tuple(issues)
        super().__init__([(i.where(), i.reason) for i in issues], source="policy files")


@dataclass(frozen=True, slots=True)
class Parsed:
    path: str
    line: int
    document: PolicyDocument
    node: yaml.Node  # for the line of a problem found after validation


def _line_of(node: yaml.Node, loc: tuple[int | str, ...]) -> int:
    """The line of the deepest YAML node ``loc`` reaches (pydantic locations, aliases)."""
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    # An unknown key's own line is where the mistake is.
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _documents(path: str, text: str) -> Iterable[tuple[yaml.Node, Any]]:
    loader = BoundedLoader(text)  # nesting and alias expansion bounded, as for manifests
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            measure(node)
            yield node, loader.construct_document(node)
    finally:
        loader.dispose()


def parse_text(path: str, text: str) -> tuple[list[Parsed], list[Issue]]:
    """Every document in one file, and every problem found in it."""
    parsed: list[Parsed] = []
    issues: list[Issue] = []
    try:
        docs = list(_documents(path, text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        issues.append(Issue(path, line, "", f"not valid YAML: {exc.problem or exc}"))
        return parsed, issues
    except yaml.YAMLError as exc:
        issues.append(Issue(path, None, "", f"not valid YAML: {exc}"))
        return parsed, issues
    for n, (node, data) in enumerate(docs, start=1):
        line = node.start_mark.line + 1
        if data is None:
            continue  # an empty document (a trailing `---`) defines nothing
        if not isinstance(data, dict):
            issues.append(Issue(path, line, "", f"document {n} must be a mapping with "
                                "apiVersion, kind, metadata and spec"))
            continue
        kind = data.get("kind")
        model = MODEL_OF_KIND.get(kind) if isinstance(kind, str) else None
        if model is None:
            issues.append(Issue(path, _line_of(node, ("kind",)), "kind",
                                f"must be one of {', '.join(KINDS)} (got {kind!r})"))
            continue
        try:
            doc = model.model_validate(data)
        except ValidationError as exc:
            for err_loc, reason in _located(exc):
                issues.append(Issue(path, _line_of(node, err_loc), _dotted(err_loc), reason))
            continue
        parsed.append(Parsed(path, line, doc, node))
    return parsed, issues


def _located(exc: ValidationError) -> list[tuple[tuple[int | str, ...], str]]:
    """(location, reason) pairs with pydantic's type tags taken out of the location."""
    by_text = dict(problems_of(exc))
    out: list[tuple[tuple[int | str, ...], str]] = []
    seen: set[str] = set()
    for err in exc.errors(include_url=False):
        loc = tuple(
            p for p in err["loc"] if p not in ("str", "list[str]", "float", "int", "list[...]")
            and not (isinstance(p, str) and p.startswith(("list[", "function-")))
        )
        text = _dotted(loc)
        if text in seen:
            continue
        seen.add(text)
        out.append((loc, by_text.get(text, err["msg"])))
    return out


def _dotted(loc: tuple[int | str, ...]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _job_matcher(m: JobMatch) -> JobMatcher:
    return JobMatcher(
        labels=compile_labels(m.labels),
        queue=AnyOf.of(m.queue) if m.queue is not None else None,
        team=AnyOf.of(m.team) if m.team is not None else None,
    )


def _cluster_matcher(s: ClusterSelector) -> ClusterMatcher:
    return ClusterMatcher(
        labels=compile_labels(s.cluster_labels),
        names=AnyOf.of(list(s.clusters)) if s.clusters else None,
    )


def build_policy_set(files: Sequence[tuple[str, str | bytes]]) -> PolicySet:
    """Parse, validate and compile ``(path, content)`` pairs into one set, or raise
    :class:`PolicyError` naming every problem. Paths are used as given (in messages and
    sources); pass them in a stable order (the loader sorts by name)."""
    issues: list[Issue] = []
    parsed: list[Parsed] = []
    sources: list[Source] = []
    for path, content in files:
        raw = content.encode() if isinstance(content, str) else content
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(Issue(path, None, "", f"not UTF-8 text ({exc.reason})"))
            continue
        got, bad = parse_text(path, text)
        parsed.extend(got)
        issues.extend(bad)
        sources.append(Source(
            path=path,
            sha256=hashlib.sha256(raw).hexdigest(),
            policies=tuple(f"{p.document.kind.lower()}/{p.document.metadata.name}" for p in got),
        ))
    # A name is how a denial names a policy: two policies of one kind with one name would
    # make "forbidden by placement/eu" ambiguous.
    first: dict[tuple[str, str], Parsed] = {}
    for p in parsed:
        key = (p.document.kind, p.document.metadata.name)
        if key in first:
            was = first[key]
            issues.append(Issue(p.path, _line_of(p.node, ("metadata", "name")), "metadata.name",
                                f"{p.document.kind} {key[1]!r} is already defined at "
                                f"{was.path}:{was.line}"))
        else:
            first[key] = p
    issues.extend(_price_conflicts(parsed))
    if issues:
        raise PolicyError(issues)
    return _compile(parsed, sources)


def _price_conflicts(parsed: Sequence[Parsed]) -> list[Issue]:
    """Two prices for one (cluster, GPU type, spot) would make cost depend on load order."""
    seen: dict[tuple[str, str, bool], str] = {}
    out = []
    for p in parsed:
        if not isinstance(p.document, CostDocument):
            continue
        for i, price in enumerate(p.document.spec.prices):
            key = (price.cluster, price.gpu_type, price.spot)
            if key in seen:
                out.append(Issue(p.path, _line_of(p.node, ("spec", "prices", i)),
                                 f"spec.prices[{i}]",
                                 f"cluster {price.cluster} {price.gpu_type} (spot: "
                                 f"{str(price.spot).lower()}) already has a price in "
                                 f"cost/{seen[key]}"))
            else:
                seen[key] = p.document.metadata.name
    return out


def _compile(parsed: Sequence[Parsed], sources: Sequence[Source]) -> PolicySet:
    placements: list[PlacementRule] = []
    guardrails: list[GuardrailRule] = []
    exact_prices: list[PriceRule] = []
    glob_prices: list[PriceRule] = []
    budgets: list[BudgetRule] = []
    cost_weight = 0.0
    links: list[LinkRule] = []
    delay_cost: float | None = None
    sha_of = {s.path: s.sha256 for s in sources}
    entries: list[PolicyEntry] = []
    for p in parsed:
        d = p.document
        origin = Origin(p.path, p.line)
        entries.append(PolicyEntry(d.kind, d.metadata.name, origin, sha_of[p.path]))
        if isinstance(d, PlacementDocument):
            s = d.spec
            placements.append(PlacementRule(
                name=d.metadata.name, origin=origin, match=_job_matcher(s.match),
                require=_cluster_matcher(s.require) if s.require else None,
                forbid=_cluster_matcher(s.forbid) if s.forbid else None,
                prefer=tuple((_cluster_matcher(x), x.weight) for x in s.prefer),
            ))
        elif isinstance(d, GuardrailDocument):
            g = d.spec
            guardrails.append(GuardrailRule(
                name=d.metadata.name, origin=origin, match=_job_matcher(g.match),
                max_gpus_per_job=g.max_gpus_per_job, max_slices=g.max_slices,
                allowed_gpu_types=(frozenset(g.allowed_gpu_types)
                                   if g.allowed_gpu_types is not None else None),
                max_runtime_s=g.max_runtime_s,
                quota_gpus=g.quota.gpus if g.quota else None,
                quota_per=g.quota.per if g.quota else "team",
                max_priority=g.max_priority,
                queues=frozenset(g.queues) if g.queues is not None else None,
            ))
        else:
            c = d.spec
            cost_weight = max(cost_weight, c.placement_weight)
            for price in c.prices:
                rule = PriceRule(d.metadata.name, Glob.of(price.cluster), price.gpu_type,
                                 price.per_gpu_hour, price.spot)
                (exact_prices if rule.cluster.regex is None else glob_prices).append(rule)
            budgets.extend(
                BudgetRule(d.metadata.name, AnyOf.of(b.team), b.period, b.limit, b.action)
                for b in c.budgets
            )
            links.extend(
                LinkRule(d.metadata.name, ln.source, ln.dest, gbps=ln.gbps) for ln in c.links
            )
            links.extend(
                LinkRule(d.metadata.name, e.source, e.dest, per_gb=e.per_gb) for e in c.egress
            )
            if c.delay_cost_per_gpu_hour is not None:
                delay_cost = c.delay_cost_per_gpu_hour
    matchers = [r.match for r in placements] + [r.match for r in guardrails]
    keys = sorted({k for m in matchers for k in m.label_keys})
    digest = hashlib.sha256(
        "\n".join(f"{s.path}\0{s.sha256}" for s in sources).encode()
    ).hexdigest()
    return PolicySet(
        sources=tuple(sources), entries=tuple(entries), placements=tuple(placements),
        guardrails=tuple(guardrails), prices=(*exact_prices, *glob_prices),
        budgets=tuple(budgets), cost_weight=cost_weight, digest=digest,
        label_keys=tuple(keys), links=tuple(links), delay_cost_per_gpu_hour=delay_cost,
    )


EMPTY = build_policy_set([])
