"""``orrery policy check FILE [--policies DIR] [--hub URL]`` and ``orrery policy list DIR``.

Registered into the ``orrery`` CLI through the ``orrery.commands`` entry point (the core CLI
never imports the hub). Lives outside ``orrery_hub.policy`` because it reads files, the
clock and the network; the engine it calls does none of that.

Offline (no ``--hub``) a check evaluates the manifest against the policy files alone: it
can say admitted or denied, which policies apply and the estimated cost, but not which
clusters exist. With ``--hub`` the hub evaluates it against its policies, inventory and
usage (``POST /v1/policies:check``). Exit status: 0 admitted (and, with a hub, at least
one eligible cluster), 1 denied, held or nowhere to run, 2 bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orrery.client import HubClient
from orrery.duration import format_duration
from orrery.hubaddress import DEFAULT_HUB
from orrery.ids import ClusterName
from orrery.manifest import parse_manifest
from orrery.resources import ClusterPublic
from orrery.textfile import read_text
from orrery_hub.admission.policyfiles import load_policies
from orrery_hub.policy import EMPTY, NO_USAGE, CheckReport, ClusterFacts, JobFacts, check_report

CHECK_PATH = "/v1/policies:check"

console = Console(soft_wrap=True)  # a reason line stays one line, for grep

ManifestArg = Annotated[Path, typer.Argument(help="job manifest, YAML or JSON")]
PoliciesOpt = Annotated[
    Path | None,
    typer.Option(envvar="ORRERY_POLICIES", help="folder of policy files, checked here"),
]
HubOpt = Annotated[
    str | None,
    typer.Option(
        "--hub",
        envvar="ORRERY_HUB",
        help=f"a hub (e.g. {DEFAULT_HUB}): alone, the hub checks against its policies, "
        "inventory and usage; with --policies, its clusters are used here",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="API token", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the report as JSON")]
FolderArg = Annotated[Path, typer.Argument(envvar="ORRERY_POLICIES", help="folder of policy files")]


class PolicyClient(HubClient):
    """The hub client plus the policy endpoints (until the core client grows them)."""

    def __enter__(self) -> PolicyClient:
        return self

    def check(self, manifest_text: str) -> CheckReport:
        return CheckReport.model_validate(self.check_policy(manifest_text))


def cluster_facts(c: ClusterPublic) -> ClusterFacts:
    """What the engine needs of a cluster as ``GET /v1/clusters`` shows it."""
    labels = dict(c.labels)
    if c.region is not None:
        labels.setdefault("region", c.region)
    return ClusterFacts(name=ClusterName(c.name), labels=labels, gpu_types=frozenset(c.gpus))


def _money(v: float | None) -> str:
    return "?" if v is None else f"${v:,.2f}"


def render(report: CheckReport, *, name: str, policies_note: str) -> None:
    word = {
        "admitted": "[green]admitted[/green]",
        "denied": "[red]denied[/red]",
        "held": "[yellow]held[/yellow] (queued, waits for budget)",
    }[report.decision]
    console.print(f"[bold]{name}[/bold]: {word}   {policies_note}")
    for d in report.denials:
        console.print(f"  denied by {d.policy}: {d.reason}")
    for h in report.holds:
        console.print(f"  held by {h.policy}: {h.reason}")
    console.print(f"  policies that apply: {', '.join(report.applies) or 'none'}")
    for r in report.placement_rules:
        console.print(f"    {r.policy}: {r.reason}")
    types = ", ".join(report.gpu_types) if report.gpu_types is not None else "any"
    console.print(f"  GPU types: {types}")
    if report.max_runtime_seconds is not None:
        console.print(
            f"  max runtime: {format_duration(report.max_runtime_seconds)} "
            f"({report.max_runtime_source})"
        )
    est = report.estimated_cost
    cost = _money(est.low) if est.low == est.high else f"{_money(est.low)} to {_money(est.high)}"
    if est.low is None:
        cost = "unknown (no price for its GPU types)"
    console.print(
        f"  estimated cost: {cost} ({est.gpus} GPUs x {format_duration(est.runtime_seconds)})"
    )
    if not report.clusters_known:
        console.print(
            "  clusters: unknown offline — without a hub this check cannot tell which "
            "clusters exist (give --hub URL)"
        )
        return
    console.print(f"  eligible clusters: {', '.join(report.eligible_clusters) or 'none'}")
    if report.summary:
        console.print(f"  {report.summary}")
    for cluster, why in report.ineligible.items():
        console.print(f"    {cluster}: {why}")


def command(app: typer.Typer) -> None:
    policy = typer.Typer(
        no_args_is_help=True, help="Check jobs against placement, guardrail and cost policies."
    )
    app.add_typer(policy, name="policy")

    @policy.command("check")
    def check(
        file: ManifestArg,
        policies: PoliciesOpt = None,
        hub: HubOpt = None,
        token: TokenOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Would this job be admitted, where could it run, what would it cost? Submits nothing."""
        text = read_text(file, what="manifest file")
        manifest = parse_manifest(text, source=str(file))
        if hub is not None and token is None:
            # The current context's token, when it is a context for this very hub.
            from orrery.config import current

            ctx = current()
            if ctx is not None and ctx.hub.rstrip("/") == hub.rstrip("/"):
                token = ctx.token
        if hub is not None and policies is None:
            with PolicyClient(hub, token=token) as c:
                report = c.check(text)
            note = f"(policies of the hub at {hub})"
        else:
            ps = load_policies(policies) if policies is not None else EMPTY
            clusters = None
            if hub is not None:
                with PolicyClient(hub, token=token) as c:
                    clusters = [cluster_facts(x) for x in c.clusters()]
            report = check_report(
                JobFacts.from_manifest(manifest), ps, NO_USAGE, time.time(), clusters
            )
            where = f"clusters of {hub}" if hub else "offline"
            note = (
                (f"(policies in {policies}, {len(ps.entries)} in force; {where}; usage not known)")
                if policies
                else "(no policies given: --policies DIR)"
            )
        if as_json:
            typer.echo(report.model_dump_json(by_alias=True, indent=2))
        else:
            render(report, name=manifest.metadata.name, policies_note=note)
        ok = report.admitted and (not report.clusters_known or bool(report.eligible_clusters))
        raise typer.Exit(0 if ok else 1)

    @policy.command("list")
    def list_(
        policies: FolderArg,
    ) -> None:
        """Validate a policy folder and list what it would put in force."""
        ps = load_policies(policies)
        for e in ps.entries:
            console.print(f"{e.kind.lower()}/{e.name}  {e.origin}  sha256:{e.sha256[:12]}")
        console.print(
            f"{len(ps.entries)} policies from {len(ps.sources)} files; "
            f"digest sha256:{ps.digest[:12]}"
        )
