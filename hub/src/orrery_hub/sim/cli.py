"""``orrery sim``: replay a trace through the scheduler. Registered into the ``orrery`` CLI
through the ``orrery.commands`` entry point (``hub/pyproject.toml``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from orrery.errors import InvalidInput, ManifestError, NotFound, OrreryError
from orrery_hub.sim.engine import POLICIES, Result, simulate
from orrery_hub.sim.fleet import load_fleet
from orrery_hub.sim.report import plot, summary
from orrery_hub.sim.trace import TraceError, read_pods


@contextmanager
def user_errors() -> Iterator[None]:
    """A bad trace, fleet or path said as the rest of the CLI says it (``orrery: PATH: no
    such file``, a bad YAML file with its line) and exit 2 — never an errno repr. Said here
    rather than left to the CLI's handler, so the command stands alone (tests, plugins)."""
    try:
        try:
            yield
        except TraceError as exc:
            raise InvalidInput(str(exc)) from None
        except FileNotFoundError as exc:
            raise NotFound(f"{exc.filename}: no such file") from None
        except IsADirectoryError as exc:
            raise InvalidInput(f"{exc.filename}: is a folder, not a file") from None
        except UnicodeDecodeError:
            raise InvalidInput("the trace is not UTF-8 text") from None
        except OSError as exc:
            raise InvalidInput(f"{exc.filename or 'sim'}: {exc.strerror}") from None
    except ManifestError as exc:
        typer.echo(f"orrery: {exc.source} refused:", err=True)
        for loc, why in exc.problems:
            typer.echo(f"  {loc or '<document>'}: {why}", err=True)
        raise typer.Exit(2) from None
    except OrreryError as exc:
        typer.echo(f"orrery: {exc.message}", err=True)
        raise typer.Exit(2) from None


def run_sim(
    trace: Path,
    fleet_file: Path | None,
    policies: list[str],
    out: Path | None,
    limit: int | None = None,
    draw: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run each policy on the same trace and fleet; write summary.json (and the plot)."""
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        raise TraceError(f"unknown policy {unknown[0]!r}; known: {', '.join(POLICIES)}")
    if "fifo" not in policies:
        policies = ["fifo", *policies]  # the baseline is always reported
    tr = read_pods(trace, limit=limit)
    fleet = load_fleet(fleet_file, trace)
    results: list[Result] = [simulate(tr.jobs, fleet, p) for p in policies]
    summaries = {r.policy: summary(r) for r in results}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(summaries, indent=2, sort_keys=True) + "\n")
        if draw:
            try:
                plot(results, summaries, out / "policies.png")
            except ImportError:  # the plot needs the `sim` extra; the summary does not
                typer.echo("orrery sim: no plot: install orrery-hub[sim] for matplotlib",
                           err=True)
    return summaries


_FLEET_HELP = "fleet YAML; default: one cluster per GPU model from the node list by the trace"
_POLICY_HELP = f"policy to run (repeatable): {', '.join(POLICIES)}; fifo always runs"

TraceArg = Annotated[
    Path | None, typer.Argument(help="pod list CSV (Alibaba GPU trace format)")
]
SweepOpt = Annotated[
    Path | None,
    typer.Option(help="grid YAML (fleets x loads x seeds, see orrery_hub.sim.sweep): run "
                 "every policy on every cell; writes sweep.json, sweep.md and sweep.png"),
]
FleetOpt = Annotated[Path | None, typer.Option(envvar="ORRERY_FLEET", help=_FLEET_HELP)]
PolicyOpt = Annotated[list[str] | None, typer.Option(envvar="ORRERY_POLICY", help=_POLICY_HELP)]
OutOpt = Annotated[
    Path, typer.Option(envvar="ORRERY_OUT", help="folder for summary.json and policies.png")
]
ServingOpt = Annotated[
    Path | None,
    typer.Option(help="an InferenceService YAML: replay its autoscaler on a request-rate "
                 "trace (TRACE: a t,rps CSV; none: a seeded synthetic day) against fixed "
                 "replicas.max and a CPU-style rule; writes serving.json"),
]
SeedOpt = Annotated[int, typer.Option(help="--serving: seed of the synthetic trace and arrivals")]
HoursOpt = Annotated[float, typer.Option(help="--serving: length of the synthetic trace")]
ServiceTimeOpt = Annotated[
    float, typer.Option(help="--serving: seconds one request takes on a replica")
]
SlotsOpt = Annotated[int, typer.Option(help="--serving: requests one replica serves at once")]
ColdOpt = Annotated[
    float, typer.Option(help="--serving: seconds from adding a replica to it being ready")
]
LimitOpt = Annotated[
    int | None, typer.Option(envvar="ORRERY_LIMIT", help="read only the first N rows")
]


def command(app: typer.Typer) -> None:
    @app.command("sim")
    def sim(
        trace: TraceArg = None,
        fleet: FleetOpt = None,
        policy: PolicyOpt = None,
        out: OutOpt = Path("sim-out"),
        limit: LimitOpt = None,
        sweep: SweepOpt = None,
        serving: ServingOpt = None,
        seed: SeedOpt = 1,
        hours: HoursOpt = 24.0,
        service_time: ServiceTimeOpt = 0.5,
        slots: SlotsOpt = 10,
        cold_start: ColdOpt = 30.0,
    ) -> None:
        """Replay a trace through the scheduler in simulated time; compare policies.
        With --serving, replay a request-rate trace through a service's autoscaler."""
        if serving is not None:
            _serving(serving, trace, out, seed, hours, service_time, slots, cold_start)
            return
        if sweep is not None:
            _sweep(sweep, out)
            return
        with user_errors():
            if trace is None:
                raise InvalidInput("sim: give a TRACE (a pod list CSV) or --sweep FILE")
            summaries = run_sim(trace, fleet, policy or ["orrery"], out, limit=limit)
        cols = ["utilization", "jct_mean", "jct_p99", "wait_mean", "wait_p99", "jain",
                "preemptions", "makespan"]
        typer.echo("policy    " + "".join(f"{c:>14}" for c in cols))
        for name, s in summaries.items():
            typer.echo(f"{name:<10}" + "".join(f"{s[c]:>14.4g}" for c in cols))
        typer.echo(f"wrote {out / 'summary.json'} and {out / 'policies.png'}")


def _sweep(path: Path, out: Path) -> None:
    from orrery_hub.sim.sweep import run_sweep

    def progress(cell: str, policy: str, s: dict[str, Any]) -> None:
        typer.echo(f"{cell} {policy}: JCT {s['jct_mean']:,.0f} s, wait {s['wait_mean']:,.0f} s,"
                   f" Jain {s['jain']:.3f}, {s['preemptions']} preemptions", err=True)

    with user_errors():
        result = run_sweep(path, out, progress=progress)
    for p, a in result["aggregate"].items():
        w, b = a["worst"], a["best"]
        typer.echo(
            f"{p}: JCT x{a['jct_ratio_geomean']:.3f}, wait x{a['wait_ratio_geomean']:.3f} of "
            f"{result['baseline']} (geomean over {a['cells']} cells); not worse in "
            f"{a['not_worse_cells']}/{a['cells']}; contended wins {a['contended_wins']}/"
            f"{a['contended_cells']} (1.5x JCT out of any policy's reach in "
            f"{a['contended_jct_unreachable']}); JCT at most x{a['jct_over_floor_max']:.3f} "
            f"of its floor; WORST {w['cell']} (JCT x{w['jct_ratio']:.2f}, wait "
            f"x{w['wait_ratio']:.2f}); best {b['cell']} (JCT x{b['jct_ratio']:.2f}, wait "
            f"x{b['wait_ratio']:.2f})")
    typer.echo(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'} and {out / 'sweep.png'}")


def _serving(service: Path, rates: Path | None, out: Path, seed: int, hours: float,
             service_time: float, slots: int, cold_start: float) -> None:
    from orrery_hub.sim.serving import Model, table
    from orrery_hub.sim.serving_cli import run_serving

    with user_errors():
        try:
            model = Model(service_time_s=service_time, slots=slots, cold_start_s=cold_start)
        except ValueError as exc:
            raise InvalidInput(f"sim --serving: {exc}") from None
        trace, summaries = run_serving(service, rates, model, seed=seed, hours=hours, out=out)
    typer.echo(f"trace: {trace.source}, {trace.seconds / 3600:g} h, "
               f"{sum(trace.rps):,.0f} requests expected")
    typer.echo(table(summaries))
    typer.echo(f"wrote {out / 'serving.json'}")
