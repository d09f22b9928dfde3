"""``orrery``: talk to a hub, or bring up a federation on this machine.

Every flag can also be set as ``ORRERY_<FLAG>`` in the environment. A user mistake (a
missing file, a bad manifest, an unreachable hub) is one clear line and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from orrery.cli import clusters as cluster_cli
from orrery.cli import contexts, tokens, views
from orrery.client import DEFAULT_HUB, HubClient
from orrery.config import Context, connect, set_context
from orrery.errors import InvalidInput, ManifestError, NotFound, OrreryError
from orrery.manifest import parse_manifest
from orrery.resources import FINAL_JOB_PHASES
from orrery.textfile import read_text

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Orrery: one control plane for GPUs in many clusters.",
)
console = Console()
err = Console(stderr=True)

HubOpt = Annotated[
    str | None,
    typer.Option(
        "--hub", envvar="ORRERY_HUB", help=f"hub URL (default: the context's, or {DEFAULT_HUB})"
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="ORRERY_TOKEN",
        help="API token (default: the current context's)",
        show_default=False,
    ),
]


def _client(hub: str | None, token: str | None) -> HubClient:
    return connect(hub, token)


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="job manifest, YAML or JSON")],
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", envvar="ORRERY_WAIT", help="wait until it ends; exit 0 only if it succeeds"
        ),
    ] = False,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a job manifest."""
    text = read_text(file, what="manifest file")
    parse_manifest(text, source=str(file))  # refuse locally first, with the same messages
    with _client(hub, token) as c:
        job = c.submit(text)
        console.print(f"submitted [bold]{job.id}[/bold] ({job.status.phase})")
        if wait:
            final = _watch(c, job.id, live=sys.stdout.isatty())
            console.print(
                f"{final.id}: {final.status.phase}"
                + (f" ({final.status.reason})" if final.status.reason else "")
            )
            raise typer.Exit(0 if final.status.phase == "Succeeded" else 1)


def _watch(c: HubClient, job_id: str, *, live: bool, interval: float = 0.5):  # type: ignore[no-untyped-def]
    if not live:
        while True:
            j = c.job(job_id)
            if j.status.phase in FINAL_JOB_PHASES:
                return j
            time.sleep(interval)
    with Live(console=console, refresh_per_second=4) as lv:
        while True:
            j = c.job(job_id)
            lv.update(views.job_detail(j, c.events(job_id)))
            if j.status.phase in FINAL_JOB_PHASES:
                return j
            time.sleep(interval)


@app.command()
def jobs(
    job_id: Annotated[str | None, typer.Argument(help="one job's detail")] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", envvar="ORRERY_WATCH", help="live view until it ends")
    ] = False,
    phase: Annotated[
        str | None, typer.Option(envvar="ORRERY_PHASE", help="only jobs in this phase")
    ] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """List jobs, or show one with its slices and why it waits."""
    with _client(hub, token) as c:
        if job_id is None:
            if watch:
                with Live(console=console, refresh_per_second=2) as lv:
                    while True:
                        lv.update(views.jobs_table(c.jobs(phase=phase)))
                        time.sleep(1)
            console.print(views.jobs_table(c.jobs(phase=phase)))
            return
        if watch:
            _watch(c, job_id, live=True)
            return
        console.print(views.job_detail(c.job(job_id), c.events(job_id)))


@app.command()
def cancel(job_id: str, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Cancel a job: its slices are stopped wherever they run."""
    with _client(hub, token) as c:
        j = c.cancel(job_id)
        console.print(f"{j.id}: {j.status.phase}")


@app.command()
def clusters(hub: HubOpt = None, token: TokenOpt = None) -> None:
    """The fleet: each cluster, its state and its GPUs."""
    with _client(hub, token) as c:
        console.print(views.clusters_table(c.clusters()))


@app.command()
def usage(
    team: Annotated[str | None, typer.Option(envvar="ORRERY_TEAM", help="only this team")] = None,
    since: Annotated[
        str | None,
        typer.Option(envvar="ORRERY_SINCE", help="how far back, e.g. 7d (default: all time)"),
    ] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """GPU-seconds and cost per team and job, from the attempts' real start and end."""
    from rich.table import Table

    with _client(hub, token) as c:
        u = c.usage(team=team, since=since)
    t = Table(title="Usage by team" + (f" (last {since})" if since else ""), title_justify="left")
    for col in ("TEAM", "GPU-HOURS", "COST", "GPUS IN USE"):
        t.add_column(col)
    in_use = u["gpusInUse"]["byTeam"]
    for name, v in u["teams"].items():
        t.add_row(
            name or "(no team)",
            f"{v['gpuSeconds'] / 3600:.3f}",
            f"{v['cost']:.2f}",
            str(in_use.get(name, 0)),
        )
    console.print(t)
    j = Table(title="By job", title_justify="left")
    for col in ("JOB", "TEAM", "QUEUE", "ATTEMPTS", "GPU-SECONDS", "COST"):
        j.add_column(col)
    for row in u["jobs"]:
        j.add_row(
            row["job"],
            row["team"] or "-",
            row["queue"],
            str(row["attempts"]),
            f"{row['gpuSeconds']:.1f}",
            f"{row['cost']:.4f}",
        )
    console.print(j)


@app.command()
def up(
    spokes: Annotated[
        int, typer.Option(envvar="ORRERY_SPOKES", min=1, max=50, help="spoke agents to start")
    ] = 3,
    port: Annotated[int, typer.Option(envvar="ORRERY_PORT", help="hub API port")] = 8080,
    policies: Annotated[
        Path | None, typer.Option(envvar="ORRERY_POLICIES", help="policy folder")
    ] = None,
    state: Annotated[Path, typer.Option(envvar="ORRERY_STATE", help="state folder")] = Path(
        ".orrery/federation"
    ),
    fast: Annotated[
        bool, typer.Option(envvar="ORRERY_FAST", help="the same as --timing fast")
    ] = False,
    timing_preset: Annotated[
        str | None,
        typer.Option(
            "--timing",
            envvar="ORRERY_TIMING",
            help="default (heartbeat 1 s, failover 15 s), fast (0.25 s, 3.5 s) or "
            "aggressive (0.25 s, 1.3 s); the flags below override it",
        ),
    ] = None,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(envvar="ORRERY_HEARTBEAT_INTERVAL", help="spoke heartbeat interval, s"),
    ] = None,
    lease: Annotated[
        float | None,
        typer.Option(
            envvar="ORRERY_LEASE", help="a spoke cut off from the hub this long stops its slices, s"
        ),
    ] = None,
    failover_timeout: Annotated[
        float | None,
        typer.Option(
            envvar="ORRERY_FAILOVER_TIMEOUT",
            help="a cluster silent this long is Lost and its slices move, s",
        ),
    ] = None,
    kill_grace: Annotated[
        float | None, typer.Option(envvar="ORRERY_KILL_GRACE", help="SIGTERM to SIGKILL, s")
    ] = None,
) -> None:
    """A whole federation on this machine: NATS, the hub, and N simulated GPU clusters."""
    import dataclasses
    import signal

    from orrery.federation import Federation, Timings, default_spokes

    if fast and timing_preset not in (None, "fast"):
        raise InvalidInput(f"--fast and --timing {timing_preset}: give one of them")
    timings = Timings.preset(timing_preset or ("fast" if fast else "default"))
    overrides = {
        "heartbeat_s": heartbeat_interval,
        "lease_s": lease,
        "failover_s": failover_timeout,
        "kill_grace_s": kill_grace,
    }
    timings = dataclasses.replace(timings, **{k: v for k, v in overrides.items() if v is not None})
    fed = Federation(
        state, spokes=default_spokes(spokes), port=port, policies=policies, timings=timings
    )

    def on_term(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt  # run the finally below: the children are in other sessions

    signal.signal(signal.SIGTERM, on_term)
    t = fed.timings
    err.print(
        f"starting NATS, the hub and {spokes} spoke(s) under {state} ... (heartbeat "
        f"{t.heartbeat_s}s, lease {t.lease_s}s, failover {t.failover_s}s)"
    )
    try:
        fed.start()
        with fed.client() as c:
            console.print(views.clusters_table(c.clusters()))
        assert fed.api_url is not None
        where = set_context(Context(name="local", hub=fed.api_url, token=fed.admin_token))
        console.print(f"hub: [bold]{fed.api_url}[/bold]")
        console.print(
            f"admin context 'local' written to {where} (current): orrery jobs, orrery "
            "clusters, ... use it. For scripts and other shells:"
        )
        # One line each, unwrapped, so a script can read them (eval "$(... | grep export)").
        print(f"export ORRERY_HUB={fed.api_url}", flush=True)
        print(f"export ORRERY_TOKEN={fed.admin_token}", flush=True)
        console.print(f"logs: {fed.state / 'logs'}.  Ctrl-C stops everything.")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fed.stop()


@app.command()
def demo(
    state: Annotated[
        Path,
        typer.Option(
            envvar="ORRERY_STATE", help="state folder (wiped first, only if the demo made it)"
        ),
    ] = Path(".orrery/demo"),
    port: Annotated[int, typer.Option(envvar="ORRERY_PORT", help="hub API port (0: any free)")] = 0,
    kill: Annotated[bool, typer.Option(envvar="ORRERY_KILL", help="kill a spoke mid-run")] = True,
) -> None:
    """The guided tour: a federation, a training job, a spoke killed mid-run, the job done."""
    from orrery.cli.demo import run_demo

    raise typer.Exit(run_demo(state, port=port, kill=kill, console=console))


app.add_typer(tokens.app, name="token")
app.add_typer(cluster_cli.app, name="cluster")
app.add_typer(contexts.app, name="config")


def _plugins() -> None:
    for ep in entry_points(group="orrery.commands"):
        try:
            ep.load()(app)
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            err.print(f"[yellow]orrery: command {ep.name!r} unavailable: {exc}[/yellow]")


_plugins()


def run() -> None:
    """Console-script entry. Usage errors are typer's (exit 2); domain errors become one
    line and a non-zero exit; nothing a user can cause ends in a traceback."""
    try:
        app()
    except ManifestError as exc:
        err.print(f"[red]orrery: {exc.source} refused:[/red]")
        for loc, why in exc.problems:
            err.print(f"  {loc or '<document>'}: {why}")
        sys.exit(2)
    except OrreryError as exc:
        err.print(f"[red]orrery: {exc.message}[/red]")
        sys.exit(2 if isinstance(exc, InvalidInput | NotFound) else 1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
