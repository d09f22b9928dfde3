"""Placement on data (``scheduler.data``): a job runs where its dataset is when there is
room; with that region full and another idle, the stated cost model decides and the
explanation shows both options; residency keeps the data (and the job) in its region."""

from __future__ import annotations

from dataclasses import replace

from orrery.ids import ClusterName, JobId, NodeName, SliceIndex
from orrery_hub.datasets.placement import DataInputs, data_policy
from orrery_hub.scheduler import (
    ClusterCapacity,
    JobRequest,
    NodeCapacity,
    Policy,
    Snapshot,
    plan,
)
from orrery_hub.scheduler.data import DataPolicy, DatasetFacts, Link, transfer
from orrery_hub.scheduler.snapshot import RunningJob, RunningSlice
from orrery_hub.scheduler.waitlist import WaitList
from tests.hub.test_policy_helpers import policies

TIB = 2**40


def node(name: str, gpus: int = 8, free: int | None = None) -> NodeCapacity:
    f = gpus if free is None else free
    return NodeCapacity(NodeName(name), "H100", gpus, tuple(range(gpus - f, gpus)))


def cluster(name: str, region: str, free: int = 8) -> ClusterCapacity:
    return ClusterCapacity(
        ClusterName(name), {"region": region}, True, (node(f"{name}-0", 8, free),)
    )


def job(jid: str = "j", gpus: int = 8, datasets: tuple[str, ...] = ("c4",)) -> JobRequest:
    return JobRequest(
        id=JobId(jid),
        name=jid,
        priority=0,
        seq=0,
        gpus_per_slice=gpus,
        gpu_types=None,
        pending=(SliceIndex(0),),
        gang=True,
        datasets=datasets,
    )


def busy_until(cluster_name: str, end: float) -> RunningJob:
    """A job holding all 8 GPUs of the cluster's node until ``end``."""
    return RunningJob(
        id=JobId(f"busy-{cluster_name}"),
        queue="default",
        priority=0,
        slices=(
            RunningSlice(
                SliceIndex(0),
                ClusterName(cluster_name),
                NodeName(f"{cluster_name}-0"),
                tuple(range(8)),
            ),
        ),
        started_at=0.0,
        max_runtime=end,
    )


# Held in eu-west's cache already; its object-store copy is in eu-west-1 too.
C4 = DatasetFacts(
    "c4",
    size_bytes=2 * TIB,
    source_regions=("eu-west-1",),
    cached_on=frozenset({ClusterName("eu-west")}),
)
LINKS = (Link("eu-*", "us-*", gbps=8.0, per_gb=0.09),)


def data(*ds: DatasetFacts, value: float = 2.0) -> DataPolicy:
    return DataPolicy(datasets={d.name: d for d in ds}, links=LINKS, delay_cost_per_gpu_hour=value)


def test_the_job_runs_where_its_data_is_when_there_is_room() -> None:
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1")),
        jobs=(job(),),
        data=data(C4),
    )
    p = plan(snap, now=0)
    assert [x.cluster for x in p.placements] == ["eu-west"]
    note = p.data_notes[JobId("j")]
    assert note.startswith("eu-west: data here, GPUs free now")
    assert "us-east: 2.0 TiB to stage, ~36m39s, $198 egress, GPUs free now" in note


def test_with_its_region_full_a_short_wait_beats_staging_terabytes() -> None:
    # eu-west frees its GPUs in 10 minutes; staging 2 TiB to us-east takes ~37 minutes
    # and $198: the job waits, and says both.
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        running=(busy_until("eu-west", 600.0),),
        data=data(C4),
    )
    p = plan(snap, now=0)
    assert p.placements == ()
    why = p.waiting[JobId("j")]
    us = why.clusters[ClusterName("us-east")]
    assert "us-east: 2.0 TiB to stage, ~36m39s, $198 egress, GPUs free now" in us
    assert "dearer than waiting for eu-west: data here, ~10m wait for GPUs" in us
    assert p.data_notes[JobId("j")].startswith("waits for eu-west")
    assert p.prefetch == {}  # its data is there already: nothing to stage ahead


def test_with_its_region_full_for_hours_the_job_goes_where_the_gpus_are() -> None:
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        running=(busy_until("eu-west", 24 * 3600.0),),
        data=data(C4),
    )
    p = plan(snap, now=0)
    assert [x.cluster for x in p.placements] == ["us-east"]
    note = p.data_notes[JobId("j")]
    assert note.index("us-east:") < note.index("eu-west: data here, ~24h wait for GPUs")


def test_data_only_in_the_object_store_is_staged_even_in_its_own_region() -> None:
    in_store = replace(C4, cached_on=frozenset())
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1")),
        jobs=(job(),),
        data=data(in_store),
    )
    p = plan(snap, now=0)
    assert [x.cluster for x in p.placements] == ["eu-west"]  # 10 Gbps within the region
    assert p.data_notes[JobId("j")].startswith("eu-west: 2.0 TiB to stage, ~29m19s, $0 egress")


def test_the_price_of_delay_tips_the_choice() -> None:
    # The same fleet and a 1-hour wait: cheap GPU-hours make $198 of egress the bigger
    # cost (wait); dear ones make the wait the bigger cost (stage elsewhere).
    def where(value: float) -> list[str]:
        snap = Snapshot(
            clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
            jobs=(job(),),
            running=(busy_until("eu-west", 3600.0),),
            data=data(C4, value=value),
        )
        return [x.cluster for x in plan(snap, now=0).placements]

    assert where(2.0) == []
    assert where(100.0) == ["us-east"]


def test_data_already_cached_on_a_cluster_costs_nothing_to_stage() -> None:
    cached = replace(C4, cached_on=frozenset({ClusterName("us-east"), ClusterName("eu-west")}))
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        running=(busy_until("eu-west", 600.0),),
        data=data(cached),
    )
    p = plan(snap, now=0)
    assert [x.cluster for x in p.placements] == ["us-east"]
    assert "us-east: data here, GPUs free now" in p.data_notes[JobId("j")]


def test_eu_data_is_never_staged_out_of_the_eu_even_when_the_eu_is_full() -> None:
    eu_only = replace(
        C4,
        allowed=frozenset({ClusterName("eu-west")}),
        denied={ClusterName("us-east"): "forbidden by placement/eu-data"},
    )
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        running=(busy_until("eu-west", 10 * 3600.0),),
        data=data(eu_only),
    )
    p = plan(snap, now=0)
    assert p.placements == ()
    us = p.waiting[JobId("j")].clusters[ClusterName("us-east")]
    assert us == "dataset c4 may not be staged here: forbidden by placement/eu-data"


def test_jobs_without_datasets_are_untouched() -> None:
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1")),
        jobs=(job(datasets=()),),
        data=data(C4),
    )
    p = plan(snap, now=0)
    assert p.data_notes == {} and len(p.placements) == 1


def test_links_serve_both_directions_and_unknown_pairs_use_the_default() -> None:
    pol = data(C4)
    assert transfer(pol, 10**9, "us-east-1", "eu-west-1") == transfer(
        pol, 10**9, "eu-west-1", "us-east-1"
    )
    seconds, usd = transfer(pol, 10**9, "ap-1", "ap-2")
    assert (seconds, usd) == (8.0, 0.0)  # 1 Gbps default, no price declared


def test_a_dataset_labelled_eu_may_go_only_where_the_residency_policy_allows() -> None:
    from orrery_hub.policy.facts import ClusterFacts
    from orrery_hub.policy.parse import build_policy_set
    from orrery_hub.policy.residency import dataset_clusters

    policies = build_policy_set(
        [
            (
                "residency.yaml",
                """
apiVersion: orrery/v1
kind: Placement
metadata: {name: eu-residency}
spec:
  match: {labels: {data-residency: eu}}
  require: {clusterLabels: {region: "eu-*"}}
---
apiVersion: orrery/v1
kind: Placement
metadata: {name: research-elsewhere}
spec:
  match: {queue: research}
  forbid: {clusters: [eu-west]}
""",
            )
        ]
    )
    fleet = [
        ClusterFacts(ClusterName("eu-west"), {"region": "eu-west-1"}, frozenset({"H100"})),
        ClusterFacts(ClusterName("us-east"), {"region": "us-east-1"}, frozenset({"H100"})),
    ]
    allowed, denied = dataset_clusters("c4", {"data-residency": "eu"}, fleet, policies)
    assert allowed == {"eu-west"}
    assert "placement/eu-residency" in denied[ClusterName("us-east")]
    assert dataset_clusters("wiki", {}, fleet, policies) == (None, {})


def test_gpus_held_by_nothing_the_hub_counts_as_running_free_within_the_grace() -> None:
    # A cancelled job's attempt still holds eu-west's GPUs; it is no longer "running".
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        data=data(C4),
    )
    p = plan(snap, now=0)
    assert p.placements == ()
    assert p.data_notes[JobId("j")].startswith("waits for eu-west: eu-west: data here, ~30s wait")


def test_a_running_job_without_a_declared_runtime_is_taken_to_run_a_day() -> None:
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        running=(replace(busy_until("eu-west", 0.0), max_runtime=None),),
        data=data(C4),
    )
    p = plan(snap, now=0)
    assert [x.cluster for x in p.placements] == ["us-east"]
    assert "eu-west: data here, ~24h wait for GPUs" in p.data_notes[JobId("j")]


def test_a_restarted_job_prefers_clusters_near_its_last_checkpoint() -> None:
    # Its last attempt ran on eu-west (now Lost); eu-north is in the same region as that
    # checkpoint, us-east is not: both are idle, eu-north wins.
    lost = replace(cluster("eu-west", "eu-west-1"), ready=False)
    restarted = replace(
        job(datasets=()), checkpoint_cluster=ClusterName("eu-west"), gpus_per_slice=4
    )
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-north", "eu-west-1"), lost),
        jobs=(restarted,),
        data=data(),
    )
    p = plan(snap, now=0)
    assert [x.cluster for x in p.placements] == ["eu-north"]
    note = p.data_notes[JobId("j")]
    assert note.startswith("eu-north: 100.0 GiB to stage")
    # Checkpoints only score: with eu-north busy for hours the job runs in us-east at once.
    busy = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-north", "eu-west-1", free=0), lost),
        jobs=(restarted,),
        running=(busy_until("eu-north", 600.0),),
        data=data(),
    )
    assert [x.cluster for x in plan(busy, now=0).placements] == ["us-east"]


def test_a_job_waiting_for_a_cluster_without_its_data_prefetches_it_there() -> None:
    in_store = replace(C4, cached_on=frozenset())  # only in eu-west-1's object store
    snap = Snapshot(
        clusters=(cluster("us-east", "us-east-1"), cluster("eu-west", "eu-west-1", free=0)),
        jobs=(job(),),
        running=(busy_until("eu-west", 600.0),),
        data=data(in_store),
    )
    p = plan(snap, now=0)
    assert p.placements == ()
    assert p.prefetch == {JobId("j"): ClusterName("eu-west")}


def test_a_kept_order_s_count_decides_whether_a_pass_has_a_data_stage() -> None:
    """``data_policy`` reads the kept order's count of jobs reading data, not every job;
    with an order that does not match the requests, it looks at them."""
    reading, plain = job("r"), job("p", datasets=())
    none = policies()
    both = (reading, plain)
    assert data_policy(DataInputs(), both, caches={}, clusters=(), policies=none) is not None
    kept = WaitList(Policy(), None, both).view()
    got = data_policy(DataInputs(), both, caches={}, clusters=(), policies=none, kept=kept)
    assert got is not None
    only_plain = WaitList(Policy(), None, (plain,)).view()
    assert only_plain.reading == 0
    assert data_policy(DataInputs(), (plain,), caches={}, clusters=(), policies=none,
                       kept=only_plain) is None  # fmt: skip
    # An order of other jobs than the requests (here one fewer): its count is not used.
    got = data_policy(DataInputs(), both, caches={}, clusters=(), policies=none, kept=only_plain)
    assert got is not None
