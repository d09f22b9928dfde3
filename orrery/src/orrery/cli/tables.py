"""The columns of ``orrery jobs`` and ``orrery clusters`` (plain, kubectl style).

IDs and names are never dropped or cut; on a narrow terminal the free text wraps and the
optional columns go, least useful first (the ``drop`` numbers below).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from orrery.cli.columns import Column
from orrery.duration import format_duration
from orrery.resources import ClusterPublic, JobPublic

JOB_COLUMNS = (
    Column("ID"),
    Column("PHASE"),
    Column("QUEUE", drop=4),
    Column("SLICES", drop=3),
    Column("GPUS", drop=5),
    Column("AGE", drop=6),
    Column("ELAPSED", drop=2),
    Column("ENDED", drop=7),
    Column("WHY / PROGRESS", drop=1, wrap=True),
)
JOB_WIDE = (
    Column("ID"),
    Column("NAME"),
    Column("PHASE"),
    Column("QUEUE"),
    Column("TEAM"),
    Column("PRIORITY"),
    Column("SLICES"),
    Column("GPUS"),
    Column("GPU TYPE"),
    Column("CREATED"),
    Column("STARTED"),
    Column("ENDED"),
    Column("ELAPSED"),
    Column("RESTARTS"),
    Column("CLUSTERS"),
    Column("WHY / PROGRESS", wrap=True),
)


def when(ts: float | None, *, date: bool = False) -> str:
    """A time of day (with the date when it is not today, or when asked)."""
    if ts is None:
        return "-"
    local = time.localtime(ts)
    if date or time.strftime("%Y-%m-%d", local) != time.strftime("%Y-%m-%d"):
        return time.strftime("%Y-%m-%d %H:%M:%S", local)
    return time.strftime("%H:%M:%S", local)


def ago(ts: float | None) -> str:
    return "-" if ts is None else format_duration(max(0.0, time.time() - ts))


def elapsed(j: JobPublic, now: float | None = None) -> str:
    """Run time: from the first start to the end, or to now while it runs."""
    st = j.status
    if st.started_at is None:
        return "-"
    end = st.finished_at if st.finished_at is not None else (now or time.time())
    return format_duration(max(0.0, end - st.started_at))


def progress(j: JobPublic) -> str:
    """Why it waits, why it ended, or how far it has come."""
    note = j.status.reason or ""
    if j.status.phase == "Running":
        steps = [s.progress.get("step") for s in j.status.slices if s.progress]
        total = next(
            (
                s.progress.get("totalSteps") or s.progress.get("total_steps")
                for s in j.status.slices
                if s.progress
            ),
            None,
        )
        known = [x for x in steps if isinstance(x, int)]
        if known and total:
            note = f"step {min(known)}/{total}"
    return note or "-"


def job_row(j: JobPublic, wide: bool) -> Sequence[str]:
    spec, st = j.spec, j.status
    n = int(spec.get("slices", 1))
    g = int(spec.get("gpusPerSlice", 1))
    running = sum(1 for s in st.slices if s.phase == "Running")
    if not wide:
        return (
            j.id,
            st.phase,
            str(spec.get("queue", "default")),
            f"{running}/{n}",
            str(n * g),
            ago(st.created_at),
            elapsed(j),
            when(st.finished_at),
            progress(j),
        )
    gpu_type = spec.get("gpuType")
    types = "/".join(gpu_type) if isinstance(gpu_type, list) else (gpu_type or "any")
    labels = j.metadata.get("labels") or {}
    clusters = sorted({s.cluster for s in st.slices if s.cluster})
    return (
        j.id,
        str(j.metadata.get("name", "-")),
        st.phase,
        str(spec.get("queue", "default")),
        str(labels.get("team", "-")),
        str(spec.get("priority", 0)),
        f"{running}/{n}",
        str(n * g),
        types,
        when(st.created_at, date=True),
        when(st.started_at, date=True),
        when(st.finished_at, date=True),
        elapsed(j),
        str(st.restarts),
        ",".join(clusters) or "-",
        progress(j),
    )


CLUSTER_COLUMNS = (
    Column("NAME"),
    Column("REGION", drop=3),
    Column("STATE"),
    Column("NODES", drop=4),
    Column("GPUS (free/total)", drop=1, wrap=True),
    Column("SLICES", drop=2),
    Column("LAST HEARTBEAT", drop=5),
)
CLUSTER_WIDE = (
    *CLUSTER_COLUMNS[:3],
    Column("EXECUTOR"),
    *CLUSTER_COLUMNS[3:],
    Column("LABELS"),
)


def cluster_row(c: ClusterPublic, wide: bool) -> Sequence[str]:
    gpus = ", ".join(f"{k} {v.free}/{v.total}" for k, v in c.gpus.items()) or "-"
    cells = [
        c.name,
        c.region or "-",
        c.state,
        str(c.nodes),
        gpus,
        str(c.running_slices),
        ago(c.last_heartbeat) + " ago",
    ]
    if wide:
        labels = ",".join(f"{k}={v}" for k, v in sorted(c.labels.items())) or "-"
        cells = [*cells[:3], c.executor, *cells[3:], labels]
    return cells


TEAM_COLUMNS = (Column("TEAM"), Column("GPU-HOURS"), Column("COST"), Column("GPUS IN USE"))
USAGE_JOB_COLUMNS = (
    Column("JOB"),
    Column("TEAM", drop=2),
    Column("QUEUE", drop=1),
    Column("ATTEMPTS", drop=3),
    Column("GPU-SECONDS"),
    Column("COST"),
)


def cost_text(row: Mapping[str, Any], digits: int) -> str:
    """The cost, or "no price" where no Cost policy priced the GPUs used (a hub that says
    so sends ``unpricedGpuSeconds``): 0.00 would claim the work was free."""
    cost = f"{row['cost']:.{digits}f}"
    unpriced = float(row.get("unpricedGpuSeconds") or 0.0)
    if unpriced <= 0:
        return cost
    if unpriced >= float(row.get("gpuSeconds") or 0.0):
        return "no price"
    return f"{cost} + unpriced"
