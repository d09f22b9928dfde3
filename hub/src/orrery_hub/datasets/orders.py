"""What an assignment carries for the datasets its job reads: for each, the location to
copy it from (a path on the slice's own cluster if one is declared, else the object-store
copy in the cluster's region, else the first), and the slice's shard range in its
environment:

    ORRERY_DATA_SHARDS          ``start:end`` of the first dataset's shards
    ORRERY_DATA_SHARDS_<NAME>   the same for each dataset

(``ORRERY_DATA_<NAME>``, the path, is set by the spoke: only it knows its cache.) Called by
whoever builds assignments (``reconcile.assignment_for``'s callers), on the store thread.
"""

from __future__ import annotations

from sqlmodel import Session, select

from orrery.dataset import Location, env_name, shard_range
from orrery.errors import ManifestError
from orrery.manifest import JobManifest
from orrery.wire import DataMount, Prefetch
from orrery_hub.scheduler import Plan
from orrery_hub.store import datasets as dsstore
from orrery_hub.store.models import ClusterRow, JobRow, SliceRow

DataOrder = tuple[list[DataMount], dict[str, str]]


def _pick(locations: list[Location], cluster: str, region: str | None) -> Location:
    for loc in locations:
        if loc.cluster == cluster:
            return loc
    s3 = [loc for loc in locations if loc.uri]
    for loc in s3:
        if region is not None and loc.region == region:
            return loc
    return s3[0] if s3 else locations[0]


def prefetch_order(s: Session, job_id: str, cluster: str) -> Prefetch | None:
    """Stage the job's datasets on ``cluster`` now (it waits there for GPUs)."""
    job = s.exec(select(JobRow).where(JobRow.id == job_id)).first()
    if job is None:
        return None
    got = data_order(s, job, SliceRow(job_id=job_id, index=0, cluster=cluster))
    if got is None:
        return None
    return Prefetch(sender="hub", seq=0, job=job_id, datasets=got[0])


MAX_PREFETCHED = 10_000  # jobs remembered as prefetched; the oldest are forgotten first


def prefetch_orders(s: Session, plan: Plan, sent: dict[str, str]) -> list[tuple[str, Prefetch]]:
    """A Prefetch for each job the pass left waiting for a cluster without its data, once
    per (job, cluster): ``sent`` remembers what went out."""
    out: list[tuple[str, Prefetch]] = []
    for job_id, cluster in plan.prefetch.items():
        if sent.get(job_id) == cluster:
            continue
        order = prefetch_order(s, job_id, cluster)
        if order is not None:
            out.append((cluster, order))
            sent.pop(job_id, None)
            sent[job_id] = cluster
    while len(sent) > MAX_PREFETCHED:
        sent.pop(next(iter(sent)))
    return out


def data_order(s: Session, job: JobRow, sl: SliceRow) -> DataOrder | None:
    """The slice's mounts and shard environment; None when its job reads no dataset."""
    refs = (job.manifest.get("spec") or {}).get("datasets") or []
    if not refs:
        return None
    rows = dsstore.named(s, [r["name"] for r in refs])
    cluster = sl.cluster or ""
    crow = s.get(ClusterRow, cluster)
    region = crow.labels.get("region") if crow is not None else None
    slices = int((job.manifest.get("spec") or {}).get("slices", 1))
    mounts: list[DataMount] = []
    env: dict[str, str] = {}
    for ref in refs:
        row = rows.get(ref["name"])
        if row is None:
            raise ValueError(f"dataset {ref['name']!r} no longer exists")
        m = dsstore.manifest_of(row)
        loc = _pick(list(m.spec.locations), cluster, region)
        start, end = shard_range(m.spec.shards, slices, sl.index)
        env.setdefault("ORRERY_DATA_SHARDS", f"{start}:{end}")
        env[env_name(row.name).replace("ORRERY_DATA_", "ORRERY_DATA_SHARDS_", 1)] = f"{start}:{end}"
        mounts.append(
            DataMount(
                name=row.name,
                version=row.version,
                uri=loc.uri if loc.uri else (loc.path or ""),
                endpoint=loc.endpoint,
                region=loc.region,
                size_bytes=row.size_bytes,
                mount_path=ref["mountPath"],
            )
        )
    return mounts, env


def check_datasets(s: Session, manifest: JobManifest) -> None:
    """Every dataset a job names must exist: a 422 naming the entry, before it is stored."""
    refs = manifest.spec.datasets or []
    if not refs:
        return
    known = dsstore.named(s, [r.name for r in refs])
    bad = [
        (
            f"spec.datasets[{i}].name",
            f"no dataset {r.name!r} (apply it first: orrery dataset apply)",
        )
        for i, r in enumerate(refs)
        if r.name not in known
    ]
    if bad:
        raise ManifestError(bad)
