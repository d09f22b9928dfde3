"""Property: whatever the inventory, the queue and the policies, no placement the real
scheduler makes from the engine's output violates a loaded Placement or Guardrail.

The oracle below re-reads the policy documents as plain dicts with ``fnmatch``: it shares
no code with the engine it checks.
"""

from __future__ import annotations

from collections import defaultdict
from fnmatch import fnmatchcase
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.policy import ClusterFacts, JobFacts, Usage, admit, build_policy_set
from orrery_hub.policy import constraints_for_pass as engine_pass
from orrery_hub.scheduler import ClusterCapacity, JobRequest, NodeCapacity, Snapshot, plan

REGIONS = ["eu-west", "eu-north", "us-east", "ap-south"]
TYPES = ["A100", "H100", "V100"]
TEAMS = ["nlp", "vision", None]
QUEUES = ["default", "research"]
CLUSTERS = [f"c{i}" for i in range(6)]

globs = st.sampled_from(["eu-*", "us-*", "*-north", "ap-south", "*"])


@st.composite
def cluster_selector(draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["clusterLabels"] = {"region": draw(globs)}
        if draw(st.booleans()):
            out["clusterLabels"]["hipaa"] = "true"
    if not out or draw(st.booleans()):
        out["clusters"] = draw(st.lists(st.sampled_from([*CLUSTERS, "c[0-2]"]), min_size=1,
                                        max_size=3))
    return out


job_match: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.just({}),
    st.just({"labels": {"data-residency": "eu"}}),
    st.sampled_from(["nlp", "vision", "*"]).map(lambda t: {"team": t}),
    st.sampled_from(QUEUES).map(lambda q: {"queue": q}),
)


@st.composite
def placement(draw: Any, i: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"match": draw(job_match)}
    if draw(st.booleans()):
        spec["require"] = draw(cluster_selector())
    if draw(st.booleans()) or "require" not in spec:
        spec["forbid"] = draw(cluster_selector())
    if draw(st.booleans()):
        spec["prefer"] = [{**draw(cluster_selector()), "weight": draw(st.integers(-5, 20))}]
    return {"apiVersion": "orrery/v1", "kind": "Placement", "metadata": {"name": f"p{i}"},
            "spec": spec}


@st.composite
def guardrail(draw: Any, i: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"match": draw(job_match)}
    if draw(st.booleans()):
        spec["maxGpusPerJob"] = draw(st.integers(1, 32))
    if draw(st.booleans()):
        spec["allowedGpuTypes"] = draw(st.lists(st.sampled_from(TYPES), min_size=1,
                                                max_size=2, unique=True))
    if draw(st.booleans()) or len(spec) == 1:
        spec["quota"] = {"gpus": draw(st.integers(0, 24)),
                         "per": draw(st.sampled_from(["team", "queue"]))}
    return {"apiVersion": "orrery/v1", "kind": "Guardrail", "metadata": {"name": f"g{i}"},
            "spec": spec}


@st.composite
def policy_docs(draw: Any) -> list[dict[str, Any]]:
    n_p = draw(st.integers(0, 3))
    n_g = draw(st.integers(0, 3))
    return [draw(placement(i)) for i in range(n_p)] + [draw(guardrail(i)) for i in range(n_g)]


@st.composite
def fleet(draw: Any) -> list[ClusterCapacity]:
    out = []
    for name in CLUSTERS[: draw(st.integers(1, len(CLUSTERS)))]:
        labels = {"region": draw(st.sampled_from(REGIONS))}
        if draw(st.booleans()):
            labels["hipaa"] = "true"
        nodes = []
        for k in range(draw(st.integers(1, 3))):
            gpus = draw(st.sampled_from([2, 4, 8]))
            free = draw(st.integers(0, gpus))
            nodes.append(NodeCapacity(NodeName(f"{name}-n{k}"), draw(st.sampled_from(TYPES)),
                                      gpus, tuple(range(free))))
        out.append(ClusterCapacity(ClusterName(name), labels, draw(st.integers(0, 4)) > 0,
                                   tuple(nodes)))
    return out


@st.composite
def jobs(draw: Any) -> list[JobFacts]:
    out = []
    for i in range(draw(st.integers(1, 10))):
        labels = {}
        team = draw(st.sampled_from(TEAMS))
        if team:
            labels["team"] = team
        if draw(st.booleans()):
            labels["data-residency"] = "eu"
        types = draw(st.one_of(st.none(), st.lists(st.sampled_from(TYPES), min_size=1,
                                                   max_size=2, unique=True)))
        out.append(JobFacts(
            name=f"j{i}", labels=labels, queue=draw(st.sampled_from(QUEUES)),
            slices=draw(st.integers(1, 3)), gpus_per_slice=draw(st.sampled_from([1, 2, 4])),
            gpu_types=frozenset(types) if types else None, max_runtime_s=None,
            id=JobId(f"j{i}"), priority=draw(st.integers(0, 2)), seq=i,
        ))
    return out


def _matches(value: str | None, want: str | list[str]) -> bool:
    wants = [want] if isinstance(want, str) else want
    return value is not None and any(fnmatchcase(value, w) for w in wants)


def applies(doc: dict[str, Any], j: JobFacts) -> bool:
    m = doc["spec"].get("match", {})
    if "team" in m and not _matches(j.labels.get("team"), m["team"]):
        return False
    if "queue" in m and not _matches(j.queue, m["queue"]):
        return False
    return all(_matches(j.labels.get(k), v) for k, v in m.get("labels", {}).items())


def selects(sel: dict[str, Any], c: ClusterCapacity) -> bool:
    if any(fnmatchcase(c.name, n) for n in sel.get("clusters", [])):
        return True
    labels = sel.get("clusterLabels", {})
    return bool(labels) and all(_matches(c.labels.get(k), v) for k, v in labels.items())


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=policy_docs(), clusters=fleet(), queue=jobs(),
       used=st.dictionaries(st.sampled_from(["nlp", "vision", "", "default", "research"]),
                            st.integers(0, 20)))
def test_no_placement_violates_a_placement_or_guardrail(
    docs: list[dict[str, Any]], clusters: list[ClusterCapacity], queue: list[JobFacts],
    used: dict[str, int],
) -> None:
    ps = build_policy_set([("p.yaml", yaml.safe_dump_all(docs))])
    usage = Usage(gpus_by_team={k: v for k, v in used.items() if k in ("nlp", "vision", "")},
                  gpus_by_queue={k: v for k, v in used.items() if k in QUEUES})
    admitted = [j for j in queue if admit(j, ps, usage, 0.0).admitted]
    facts = [ClusterFacts(c.name, c.labels, frozenset(n.gpu_type for n in c.nodes
                                                       if n.gpu_type)) for c in clusters]
    cons = engine_pass(admitted, facts, ps, usage)
    requests = tuple(
        JobRequest(id=JobId(str(j.id)), name=j.name, priority=j.priority, seq=j.seq,
                   gpus_per_slice=j.gpus_per_slice, gpu_types=cons[JobId(str(j.id))].gpu_types,
                   pending=tuple(SliceIndex(k) for k in range(j.slices)),
                   gang=j.seq % 2 == 0, queue=j.queue, labels=j.labels,
                   allowed_clusters=cons[JobId(str(j.id))].allowed_clusters,
                   denied_reasons=cons[JobId(str(j.id))].denied_reasons,
                   cluster_scores=cons[JobId(str(j.id))].cluster_scores)
        for j in admitted
    )
    result = plan(Snapshot(tuple(clusters), requests), 0.0)

    event(f"placed: {'some' if result.placements else 'none'}")
    event(f"policies: {'some' if docs else 'none'}")
    by_id = {str(j.id): j for j in admitted}
    by_cluster = {c.name: c for c in clusters}
    node_type = {n.name: n.gpu_type for c in clusters for n in c.nodes}
    placed_gpus: dict[str, int] = defaultdict(int)
    for p in result.placements:
        j = by_id[p.job]
        c = by_cluster[p.cluster]
        placed_gpus[p.job] += len(p.gpus)
        for doc in docs:
            if not applies(doc, j):
                continue
            spec = doc["spec"]
            name = doc["metadata"]["name"]
            if doc["kind"] == "Placement":
                assert "require" not in spec or selects(spec["require"], c), (name, p)
                assert "forbid" not in spec or not selects(spec["forbid"], c), (name, p)
            else:
                if "allowedGpuTypes" in spec:
                    assert node_type[p.node] in spec["allowedGpuTypes"], (name, p)
                if "maxGpusPerJob" in spec:
                    assert j.total_gpus <= spec["maxGpusPerJob"], (name, p)
        if j.gpu_types is not None:
            assert node_type[p.node] in j.gpu_types

    for doc in docs:
        quota = doc["spec"].get("quota") if doc["kind"] == "Guardrail" else None
        if quota is None:
            continue
        buckets: dict[str, int] = defaultdict(int)
        for jid, n in placed_gpus.items():
            j = by_id[jid]
            if applies(doc, j):
                buckets[j.team if quota["per"] == "team" else j.queue] += n
        for key, n in buckets.items():
            in_use = usage.gpus(quota["per"], key)
            assert in_use + n <= quota["gpus"], (doc["metadata"]["name"], key, in_use, n)
