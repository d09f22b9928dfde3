"""``orrery demo``: the guided tour, scripted.

1. Bring up NATS, the hub and three simulated GPU clusters, with demo timings (a cluster
   silent for 3.5 s is Lost).
2. Submit a 2-slice gang training job (a real SGD loop that checkpoints every 10 steps).
3. Watch it live; once it has a checkpoint, SIGKILL the spoke agent running slice 0.
4. The spoke's slices stop when their lease lapses; the hub declares the cluster Lost,
   bumps the epoch and places the whole gang again, elsewhere if need be; training resumes
   from the checkpoint.
5. Print a summary and exit 0 when the job succeeds.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from orrery.cli import views
from orrery.federation import Federation, Timings, default_spokes
from orrery.statedir import claim

DEADLINE_S = 90.0


def demo_manifest() -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "orrery/v1",
            "kind": "TrainingJob",
            "metadata": {"name": "demo-train", "labels": {"team": "demo"}},
            "spec": {
                "queue": "research",
                "slices": 2,
                "gpusPerSlice": 4,
                "gpuType": "H100",
                "restartPolicy": "Gang",
                "maxRetries": 3,
                "maxRuntime": "10m",
                "command": [
                    sys.executable,
                    "-m",
                    "orrery.demo_train",
                    "--steps",
                    "80",
                    "--step-time",
                    "0.1",
                    "--checkpoint-every",
                    "10",
                ],
            },
        },
        sort_keys=False,
    )


def run_demo(state: Path, *, port: int, kill: bool, console: Console) -> int:
    import signal

    def on_term(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so that fed.stop() runs: its processes are in other sessions

    # Refuses (one line, exit 2) a folder the demo did not make: see orrery.statedir.
    state = claim(state, "demo")
    signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    fed = Federation(state, spokes=default_spokes(3), port=port, timings=Timings.fast())
    console.rule("[bold]Orrery demo")
    console.print("1. starting NATS, the hub and 3 simulated GPU clusters ...")
    try:
        fed.start()
        with fed.client() as c:
            console.print(views.clusters_table(c.clusters()))
            console.print("2. submitting a 2-slice gang training job (2 × 4 H100) ...")
            job = c.submit(demo_manifest())
            console.print(f"   job [bold]{job.id}[/bold]")
            killed: str | None = None
            kill_step = None
            with Live(console=console, refresh_per_second=4) as live:
                while True:
                    j = c.job(job.id)
                    live.update(views.job_detail(j, c.events(job.id)))
                    if j.final:
                        break
                    if (
                        kill
                        and killed is None
                        and j.status.phase == "Running"
                        and (j.status.checkpoint_step or 0) >= 29
                    ):
                        killed = next(s.cluster for s in j.status.slices if s.index == 0)
                        kill_step = j.status.checkpoint_step
                        assert killed is not None
                        fed.kill_spoke(killed)
                        console.print(
                            f"3. [red]SIGKILL the spoke agent of {killed}[/red] "
                            f"(checkpoint at step {kill_step})"
                        )
                    if time.monotonic() - started > DEADLINE_S:
                        console.print("[red]demo: the job did not finish in time[/red]")
                        return 1
                    time.sleep(0.25)
            attempts = c.attempts(job.id)
            events = c.events(job.id)
        elapsed = time.monotonic() - started
        summary = Table(title="Summary", title_justify="left", show_header=False)
        summary.add_column(style="bold")
        summary.add_column()
        summary.add_row("job", f"{j.id}: {j.status.phase}")
        summary.add_row(
            "epochs",
            ", ".join(
                f"slice {a.index} epoch {a.epoch} on {a.cluster} ({a.phase})" for a in attempts
            ),
        )
        if killed:
            summary.add_row("killed", f"spoke {killed} at checkpoint step {kill_step}")
            restart = next((e for e in events if e.kind == "GangRestart"), None)
            placed = [e for e in events if e.kind == "Placed"]
            if restart is not None:
                summary.add_row("recovery", restart.message)
            if len(placed) > 1:
                summary.add_row("placed again", placed[-1].message)
            first = min(
                (a.started_at for a in attempts if a.epoch > 1 and a.started_at), default=None
            )
            lost = next((a.ended_at for a in attempts if a.phase == "Lost" and a.ended_at), None)
            if first is not None and lost is not None:
                summary.add_row("cluster Lost → running again", f"{first - lost:.2f}s")
        summary.add_row("wall time", f"{elapsed:.1f}s")
        console.print(summary)
        ok = j.status.phase == "Succeeded"
        console.print(
            "[green]demo: the job succeeded[/green]"
            if ok
            else f"[red]demo: the job ended {j.status.phase}[/red]"
        )
        return 0 if ok else 1
    finally:
        fed.stop()
