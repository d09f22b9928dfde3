"""Readable builders for the policy tests: policy YAML, jobs and clusters in one line each."""

from __future__ import annotations

from collections.abc import Mapping

from orrery.ids import ClusterName, JobId
from orrery_hub.policy import ClusterFacts, JobFacts, PolicySet, build_policy_set


def policies(*docs: str) -> PolicySet:
    """A policy set from YAML documents, each given as its ``spec`` plus kind and name:
    ``policies("Placement eu: {match: ..., require: ...}")``."""
    texts = []
    for d in docs:
        head, _, spec = d.partition(":")
        kind, name = head.split()
        texts.append(f"apiVersion: orrery/v1\nkind: {kind}\nmetadata: {{name: {name}}}\n"
                     f"spec: {spec.strip()}\n")
    return build_policy_set([("test.yaml", "---\n".join(texts))])


def job(
    name: str = "j",
    *,
    labels: Mapping[str, str] | None = None,
    queue: str = "default",
    slices: int = 1,
    gpus: int = 1,
    types: frozenset[str] | None = None,
    runtime: float | None = None,
    id: str | None = None,
    priority: int = 0,
    seq: int = 0,
) -> JobFacts:
    return JobFacts(name=name, labels=dict(labels or {}), queue=queue, slices=slices,
                    gpus_per_slice=gpus, gpu_types=types, max_runtime_s=runtime,
                    id=JobId(id) if id else None, priority=priority, seq=seq)


def cluster(name: str, types: str = "H100", spot: bool = False, **labels: str) -> ClusterFacts:
    return ClusterFacts(ClusterName(name), dict(labels),
                        frozenset(t for t in types.split(",") if t), spot)


FLEET = (
    cluster("eu-west-1", region="eu-west", tier="reserved"),
    cluster("eu-north-1", region="eu-north", hipaa="true"),
    cluster("us-east-1", region="us-east", hipaa="true"),
    cluster("ap-south-1", "A100", region="ap-south"),
)
