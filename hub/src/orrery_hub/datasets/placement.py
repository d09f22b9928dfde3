"""The data half of a pass's snapshot: each dataset the waiting jobs read, the clusters
whose cache holds it (their spokes' reports) or where a location says it lives, its
object-store regions, the clusters residency lets it go to; the links and prices the
Cost policies declare; and where each restarted job's last checkpoint was written.

``load_inputs`` reads what the job database does not hold, in one short store
transaction before the pass; the rest is pure and runs with the pass, off the store
thread (``runtime.loop``), and in the benchmark with 1,000 datasets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from sqlmodel import Session, col, select

from orrery.dataset import DatasetManifest
from orrery.ids import ClusterName
from orrery.wire import CachedDataset, DatasetState
from orrery_hub.policy.facts import ClusterFacts
from orrery_hub.policy.policyset import PolicySet
from orrery_hub.policy.residency import dataset_clusters
from orrery_hub.scheduler import JobRequest
from orrery_hub.scheduler.data import DataPolicy, DatasetFacts, Link, reads_data
from orrery_hub.scheduler.waitlist import Ordered
from orrery_hub.store import datasets as dsstore
from orrery_hub.store.models import AttemptRow

DEFAULT_DELAY_COST = 2.0  # dollars per GPU-hour a job waits, unless a Cost policy says


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    name: str
    labels: Mapping[str, str]
    version: str
    size_bytes: int
    manifest: DatasetManifest


@dataclass(frozen=True, slots=True)
class DataInputs:
    datasets: Mapping[str, DatasetInfo] = field(default_factory=dict)
    checkpoints: Mapping[str, str] = field(default_factory=dict)  # job -> cluster


def load_inputs(s: Session, names: Iterable[str], restarted: Sequence[str]) -> DataInputs:
    """The datasets ``names`` (what waiting jobs read), and where each job of
    ``restarted`` (waiting, with a checkpoint) last ran. Reads nothing for neither."""
    infos = {}
    for name, row in dsstore.named(s, sorted(set(names))).items():
        infos[name] = DatasetInfo(
            row.name, dict(row.labels), row.version, row.size_bytes, dsstore.manifest_of(row)
        )
    last: dict[str, str] = {}
    for i in range(0, len(restarted), 500):
        for jid, cluster in s.exec(
            select(AttemptRow.job_id, AttemptRow.cluster)
            .where(col(AttemptRow.job_id).in_(restarted[i : i + 500]))
            .order_by(col(AttemptRow.id))
        ):
            last[jid] = cluster
    return DataInputs(infos, last)


def with_checkpoints(
    requests: tuple[JobRequest, ...], checkpoints: Mapping[str, str]
) -> tuple[JobRequest, ...]:
    """Each waiting job that has a checkpoint, with the cluster its last attempt ran on
    (where that checkpoint was written): placement then weighs bringing it elsewhere."""
    if not checkpoints:
        return requests
    return tuple(
        replace(r, checkpoint_cluster=ClusterName(checkpoints[r.id])) if r.id in checkpoints else r
        for r in requests
    )


def facts_of(
    d: DatasetInfo,
    caches: Mapping[str, Sequence[CachedDataset]],
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
) -> DatasetFacts:
    locations = d.manifest.spec.locations
    regions = tuple(sorted({loc.region for loc in locations if loc.uri and loc.region}))
    on = {ClusterName(loc.cluster) for loc in locations if loc.cluster}
    for cluster, held in caches.items():
        if any(
            c.name == d.name and c.version == d.version and c.state is DatasetState.READY
            for c in held
        ):
            on.add(ClusterName(cluster))
    allowed, denied = dataset_clusters(d.name, d.labels, clusters, policies)
    return DatasetFacts(
        name=d.name,
        size_bytes=d.size_bytes,
        source_regions=regions,
        cached_on=frozenset(on),
        allowed=allowed,
        denied=denied,
    )


def links_of(policies: PolicySet) -> tuple[Link, ...]:
    return tuple(Link(r.source, r.dest, gbps=r.gbps, per_gb=r.per_gb) for r in policies.links)


def data_policy(
    inputs: DataInputs,
    requests: Iterable[JobRequest],
    *,
    caches: Mapping[str, Sequence[CachedDataset]],
    clusters: Sequence[ClusterFacts],
    policies: PolicySet,
    grace_s: float = 30.0,
    kept: Ordered | None = None,
) -> DataPolicy | None:
    """None when no waiting job reads a dataset or has a checkpoint (the pass then skips
    the data stage). ``kept``: the kept order of ``requests``, which counts such jobs as
    they come and go; without it every waiting job is looked at, each pass."""
    if not reads_data(list(requests), kept):
        return None
    return DataPolicy(
        datasets={n: facts_of(d, caches, clusters, policies) for n, d in inputs.datasets.items()},
        links=links_of(policies),
        delay_cost_per_gpu_hour=(
            policies.delay_cost_per_gpu_hour
            if policies.delay_cost_per_gpu_hour is not None
            else DEFAULT_DELAY_COST
        ),
        grace_s=grace_s,
    )
