"""How jobs and clusters look in a terminal (rich)."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

from orrery.cli.tables import elapsed, when
from orrery.dataset import human_bytes
from orrery.duration import format_duration
from orrery.resources import ClusterPublic, EventView, JobPublic

PHASE_STYLE = {
    "Pending": "yellow",
    "Running": "cyan",
    "Succeeded": "green",
    "Failed": "red",
    "Cancelled": "magenta",
    "Assigned": "blue",
    "Lost": "red",
    "Ready": "green",
}


def phase(text: str) -> Text:
    return Text(text, style=PHASE_STYLE.get(text, ""))


SHOWN = 3  # clusters named on a row shared by many that wait for the same reason


def by_reason(clusters: dict[str, str]) -> list[tuple[str, str]]:
    """(clusters, reason) rows: a cluster per row, except that a reason shared by more
    than ``SHOWN`` clusters takes one row naming the first few (a federation of a
    thousand clusters mostly says the same thing a thousand times)."""
    groups: dict[str, list[str]] = {}
    for c in sorted(clusters):
        groups.setdefault(clusters[c], []).append(c)
    rows: list[tuple[str, str]] = []
    for why, names in groups.items():
        if len(names) > SHOWN:
            rows.append((f"{', '.join(names[:SHOWN])} and {len(names) - SHOWN} more", why))
        else:
            rows.extend((c, why) for c in names)
    return sorted(rows)


def _age(ts: float | None) -> str:
    return "-" if ts is None else format_duration(max(0.0, time.time() - ts)) + " ago"


def job_detail(j: JobPublic, events: list[EventView] | None = None, *, last: int = 10) -> Group:
    """A job's head, why it waits, its slices and its ``last`` events (0: all), saying so
    when it leaves older ones out."""
    st = j.status
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    spec = j.spec
    head.add_row("Job", f"{j.id}  ({j.metadata.get('name')})")
    head.add_row("Phase", phase(st.phase))
    gpu_type = spec.get("gpuType")
    types = "/".join(gpu_type) if isinstance(gpu_type, list) else (gpu_type or "any GPU")
    head.add_row(
        "Shape",
        f"{spec.get('slices', 1)} slice(s) × {spec.get('gpusPerSlice', 1)} "
        f"{types}, restart {spec.get('restartPolicy', 'Gang')}, "
        f"restarts {st.restarts}/{spec.get('maxRetries', 3)}",
    )
    if st.reason:
        head.add_row("Reason", st.reason)
    head.add_row(
        "Times",
        f"created {when(st.created_at)}, started {when(st.started_at)}, "
        f"ended {when(st.finished_at)}, elapsed {elapsed(j)}",
    )
    if st.checkpoint:
        head.add_row("Checkpoint", f"{st.checkpoint} (step {st.checkpoint_step})")
    if st.placement:
        head.add_row("Placement", st.placement)
    parts: list[Table | Text] = [head]
    if st.data:
        d = Table(title="Data", title_justify="left")
        for col in ("DATASET", "CLUSTER", "STATE", "STAGED", "RATE", "ETA"):
            d.add_column(col)
        for x in st.data:
            d.add_row(
                x.dataset,
                x.cluster,
                phase(x.state) if x.state != "Staging" else Text(x.state, style="yellow"),
                f"{human_bytes(x.bytes_done)} of {human_bytes(x.size_bytes)}",
                f"{human_bytes(x.rate_bps)}/s" if x.rate_bps else "-",
                format_duration(x.eta_s) if x.eta_s is not None else "-",
            )
            if x.reason:
                d.add_row("", "", x.reason, "", "", "")
        parts.append(d)
    if st.waiting and st.waiting.clusters:
        w = Table(title="Why it waits, per cluster", title_justify="left")
        w.add_column("CLUSTER")
        w.add_column("REASON")
        for c, why in by_reason(st.waiting.clusters):
            w.add_row(c, why)
        parts.append(w)
    s = Table(title="Slices", title_justify="left")
    for col in ("#", "PHASE", "EPOCH", "CLUSTER", "NODE", "GPUS", "PROGRESS", "LOSS"):
        s.add_column(col)
    for sl in st.slices:
        p = sl.progress or {}
        step, total = p.get("step"), p.get("total_steps")
        prog = f"{step + 1}/{total}" if step is not None and total else "-"
        loss = p.get("metrics", {}).get("loss")
        s.add_row(
            str(sl.index),
            phase(sl.phase),
            str(sl.epoch),
            sl.cluster or "-",
            sl.node or "-",
            ",".join(map(str, sl.gpus)) or "-",
            prog,
            f"{loss:.4f}" if isinstance(loss, float) else "-",
        )
    parts.append(s)
    if events:
        shown = events[-last:] if last > 0 else events
        if len(shown) < len(events):
            # Above the table, not its title: a title wraps at the table's own width.
            parts.append(
                Text(
                    f"Events: the last {len(shown)} of {len(events)} "
                    "(--events N shows more, --events 0 all)",
                    no_wrap=True,
                    overflow="ignore",
                )
            )
        e = Table(title=None if len(shown) < len(events) else "Events", title_justify="left")
        e.add_column("WHEN")
        e.add_column("EVENT")
        e.add_column("DETAIL")
        for ev in shown:
            e.add_row(time.strftime("%H:%M:%S", time.localtime(ev.at)), ev.kind, ev.message)
        parts.append(e)
    return Group(*parts)


def clusters_table(clusters: list[ClusterPublic]) -> Table:
    t = Table(title="Clusters", title_justify="left")
    for col in (
        "NAME",
        "REGION",
        "STATE",
        "NODES",
        "GPUS (free/total)",
        "SLICES",
        "LAST HEARTBEAT",
    ):
        t.add_column(col)
    for c in clusters:
        gpus = ", ".join(f"{k} {v.free}/{v.total}" for k, v in c.gpus.items()) or "-"
        t.add_row(
            c.name,
            c.region or "-",
            phase(c.state),
            str(c.nodes),
            gpus,
            str(c.running_slices),
            _age(c.last_heartbeat),
        )
    return t
