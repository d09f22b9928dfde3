"""Residency for data: a dataset's labels against the Placement policies, as if it were a
job with those labels. Pure. The clusters it allows are the only ones the dataset may be
staged to, so every job that reads it is placed only there (``scheduler.data``).

A dataset labelled ``data-residency: eu`` under a Placement that matches that label and
requires ``region: eu-*`` is never staged to a cluster outside the EU, whatever the job
reading it says of itself. Only Placements that match on labels apply to data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orrery.ids import ClusterName
from orrery_hub.policy.facts import ClusterFacts, JobFacts
from orrery_hub.policy.placement import combine, rule_on_clusters
from orrery_hub.policy.policyset import PolicySet


def dataset_clusters(
    name: str,
    labels: Mapping[str, str],
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
) -> tuple[frozenset[ClusterName] | None, dict[ClusterName, str]]:
    """Clusters the dataset may be staged to (None: any) and why not the others."""
    facts = JobFacts(
        name=name,
        labels=labels,
        queue="",
        slices=1,
        gpus_per_slice=0,
        gpu_types=None,
        max_runtime_s=None,
    )
    # Only policies that match on labels speak for data: one for a queue or a team (or for
    # every job) is about who runs, not about where bytes may go.
    rules = [r for r in policies.matching(facts).placements if r.match.label_keys]
    if not rules:
        return None, {}
    every = frozenset(c.name for c in clusters)
    verdict = combine([rule_on_clusters(r, clusters) for r in rules], every)
    if not verdict.restricted:
        return None, {}
    return verdict.allowed, {c: verdict.reasons[c] for c in every - verdict.allowed}
