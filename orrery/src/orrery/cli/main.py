"""``orrery``: talk to a hub, or bring up a federation on this machine.

Every flag can also be set as ``ORRERY_<FLAG>`` in the environment. A user mistake (a
missing file, a bad manifest, an unreachable hub) is one clear line and a non-zero exit,
never a traceback.
"""

from __future__ import annotations

import os
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from orrery.cli import clusters as cluster_cli
from orrery.cli import contexts, jobcmds, tokens
from orrery.cli import datasets as datasets_cli
from orrery.cli import services as services_cli
from orrery.cli.columns import render
from orrery.cli.logs import logs as logs_command
from orrery.cli.output import Output, OutputOpt, dump, emit_list, width
from orrery.cli.tables import (
    CLUSTER_COLUMNS,
    CLUSTER_WIDE,
    TEAM_COLUMNS,
    USAGE_JOB_COLUMNS,
    cluster_row,
    cost_text,
)
from orrery.cli.term import console, err
from orrery.config import Context, connect, set_context
from orrery.errors import InvalidInput, ManifestError, NotFound, OrreryError
from orrery.hubaddress import DEFAULT_HUB

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Orrery: one control plane for GPUs in many clusters.",
)

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


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("orrery-core")
        except PackageNotFoundError:  # run from a source tree that was never installed
            v = "unknown"
        typer.echo(f"orrery {v}")
        raise typer.Exit()


@app.callback()
def main(
    _version_flag: Annotated[
        bool | None,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = None,
) -> None:
    """Orrery: one control plane for GPUs in many clusters."""


jobcmds.register(app)


@app.command()
def datasets(
    name: Annotated[str | None, typer.Argument(help="one dataset")] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Datasets: size, shards, labels, locations, and which clusters cache them."""
    datasets_cli.show(name, hub, token)


@app.command()
def clusters(output: OutputOpt = Output.table, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """The fleet: each cluster, its state and its GPUs."""
    with connect(hub, token) as c:
        items = c.clusters()
    emit_list(
        items,
        output,
        columns=CLUSTER_COLUMNS,
        wide=CLUSTER_WIDE,
        row=cluster_row,
        name=lambda x: x.name,
    )


@app.command()
def usage(
    team: Annotated[str | None, typer.Option(envvar="ORRERY_TEAM", help="only this team")] = None,
    since: Annotated[
        str | None,
        typer.Option(envvar="ORRERY_SINCE", help="how far back, e.g. 7d (default: all time)"),
    ] = None,
    output: OutputOpt = Output.table,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """GPU-seconds and cost per team and job, from the attempts' real start and end.
    "no price" where no Cost policy prices the clusters and GPU types the work ran on."""
    with connect(hub, token) as c:
        u = c.usage(team=team, since=since)
    if output in (Output.json, Output.yaml):
        typer.echo(dump(u, output))
        return
    if output is Output.name:
        for row in u["jobs"]:
            typer.echo(row["job"])
        return
    fit = None if output is Output.wide else width()
    in_use = u["gpusInUse"]["byTeam"]
    typer.echo("By team" + (f" (last {since})" if since else ""))
    typer.echo(
        render(
            TEAM_COLUMNS,
            [
                (
                    name or "(no team)",
                    f"{v['gpuSeconds'] / 3600:.3f}",
                    cost_text(v, 2),
                    str(in_use.get(name, 0)),
                )
                for name, v in u["teams"].items()
            ],
            fit,
        )
    )
    typer.echo("\nBy job")
    typer.echo(
        render(
            USAGE_JOB_COLUMNS,
            [
                (
                    row["job"],
                    row["team"] or "-",
                    row["queue"],
                    str(row["attempts"]),
                    f"{row['gpuSeconds']:.1f}",
                    cost_text(row, 4),
                )
                for row in u["jobs"]
            ],
            fit,
        )
    )


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
    ha: Annotated[
        bool,
        typer.Option(
            "--ha",
            envvar="ORRERY_HA",
            help="no single point of failure: two hubs (one leads, one stands by) and three "
            "clustered nats-servers",
        ),
    ] = False,
    db: Annotated[
        str | None,
        typer.Option(
            envvar="ORRERY_DB",
            help="the hubs' database URL, e.g. postgresql://... (default: SQLite in --state)",
        ),
    ] = None,
) -> None:
    """A whole federation on this machine: NATS, the hub, and N simulated GPU clusters."""
    import dataclasses
    import signal

    from orrery.cli.upwatch import Watchdog
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
        state,
        spokes=default_spokes(spokes),
        port=port,
        policies=policies,
        timings=timings,
        gateway=True,
        hubs=2 if ha else 1,
        nats_servers=3 if ha else 1,
        db_url=db,
    )

    def on_term(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt  # run the finally below: the children are in other sessions

    signal.signal(signal.SIGTERM, on_term)
    t = fed.timings
    parts = "3 clustered nats-servers, 2 hubs" if ha else "NATS, the hub"
    err.print(
        f"starting {parts} and {spokes} spoke(s) under {state} ... (heartbeat "
        f"{t.heartbeat_s}s, lease {t.lease_s}s, failover {t.failover_s}s)"
    )
    try:
        fed.start()
        with fed.client() as c:
            typer.echo(
                render(CLUSTER_COLUMNS, [cluster_row(x, False) for x in c.clusters()], width())
            )
        assert fed.api_url is not None
        hubs = ",".join(fed.api_urls[i] for i in sorted(fed.api_urls))
        where = set_context(Context(name="local", hub=hubs, token=fed.admin_token))
        console.print(f"hub: [bold]{hubs}[/bold]" + (" (the first leads)" if ha else ""))
        if ha:
            console.print(f"nats: {fed.nats_url}")
        console.print(
            f"gateway: [bold]{fed.gateway_url}[/bold] (services at "
            f"{fed.gateway_url}/services/<name>/...)"
        )
        console.print(
            f"admin context 'local' written to {where} (current): orrery jobs, orrery "
            "clusters, ... use it. For scripts and other shells:"
        )
        # One line each, unwrapped, so a script can read them (eval "$(... | grep export)").
        print(f"export ORRERY_HUB={hubs}", flush=True)
        print(f"export ORRERY_TOKEN={fed.admin_token}", flush=True)
        print(f"export ORRERY_GATEWAY={fed.gateway_url}", flush=True)
        console.print(f"logs: {fed.state / 'logs'}.  Ctrl-C stops everything.")
        dog = Watchdog(fed, err)
        while True:
            time.sleep(1)
            dog.check()
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


services_cli.register(app)
app.command(name="logs")(logs_command)
app.add_typer(tokens.app, name="token")
app.add_typer(datasets_cli.app, name="dataset")
app.add_typer(cluster_cli.app, name="cluster")
app.add_typer(contexts.app, name="config")


def _command_named(argv: list[str]) -> str | None:
    """The command a command line runs (its first word that is not an option), or None:
    every command (``orrery``, ``orrery --help``, ``orrery --version``; and wherever this
    module is imported by something other than the CLI itself, e.g. a test driving the
    app in process, whose command line is not ours)."""
    if any(k.startswith("_ORRERY_COMPLETE") for k in os.environ):
        return None  # shell completion lists every command
    prog = argv[0] if argv else ""
    if Path(prog).name != "orrery" and not prog.endswith(str(Path("orrery", "cli", "main.py"))):
        return None
    return next((a for a in argv[1:] if not a.startswith("-")), None)


def _plugins(argv: list[str]) -> None:
    """Commands the hub and spoke distributions add. A plugin's module imports its whole
    distribution (the hub's is SQLAlchemy, FastAPI and the scheduler: ~2 s of imports on
    a loaded 2-core machine), so each is loaded only when it is the command being run, or
    when the commands are listed: ``orrery jobs`` imports none of them."""
    wanted = _command_named(argv)
    for ep in entry_points(group="orrery.commands"):
        if wanted is not None and ep.name != wanted:
            continue
        try:
            ep.load()(app)
        except Exception as exc:  # a broken plugin must not take the whole CLI down
            err.print(f"[yellow]orrery: command {ep.name!r} unavailable: {exc}[/yellow]")


_plugins(sys.argv)


def run() -> None:
    """Console-script entry. Usage errors are typer's (exit 2); domain errors become one
    line and a non-zero exit; nothing a user can cause ends in a traceback."""
    try:
        app()
    except ManifestError as exc:
        err.print(Text(f"orrery: {exc.source} refused:", style="red"))
        for loc, why in exc.problems:
            err.print(f"  {loc or '<document>'}: {why}", markup=False, highlight=False)
        sys.exit(2)
    except OrreryError as exc:
        err.print(Text(f"orrery: {exc.message}", style="red"))
        sys.exit(2 if isinstance(exc, InvalidInput | NotFound) else 1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
