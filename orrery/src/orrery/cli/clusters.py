"""``orrery cluster token create NAME``, ``approve NAME``, ``revoke NAME``, ``list``:
cluster enrollment (admin).

``token create`` prints the join token once, on stdout alone (``T=$(orrery cluster token
create eu-west-1 --labels region=eu-west-1)``); how to use it goes to stderr.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.console import Console

from orrery.cli.columns import Column
from orrery.cli.output import Output, OutputOpt, emit_list
from orrery.client import HubClient
from orrery.config import connect
from orrery.errors import InvalidInput

app = typer.Typer(no_args_is_help=True, help="Cluster enrollment: join tokens, approve, revoke.")
token_app = typer.Typer(no_args_is_help=True, help="One-time join tokens (admin).")
app.add_typer(token_app, name="token")
console = Console()
err = Console(stderr=True)

HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ORRERY_HUB", help="hub URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="your API token", show_default=False),
]
NameArg = Annotated[str, typer.Argument(help="the cluster's name")]


def _call(c: HubClient, method: str, path: str, **kw: Any) -> Any:
    r = c._request(method, path, idempotent=False, **kw)
    c._raise_for(r)
    return r.json()


def parse_labels(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep or not k:
            raise InvalidInput(f"--labels: {part!r} is not KEY=VALUE")
        out[k] = v
    return out


@token_app.command("create")
def create(
    name: NameArg,
    ttl: Annotated[str, typer.Option("--ttl", help="how long it can be used, e.g. 1h")] = "1h",
    labels: Annotated[
        str, typer.Option("--labels", help="labels bound to the cluster: k=v,k=v (region, ...)")
    ] = "",
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a one-time join token for cluster NAME and print it (once)."""
    bound = parse_labels(labels)
    with connect(hub, token) as c:
        out = _call(
            c, "POST", "/v1/clusters/tokens", json={"cluster": name, "ttl": ttl, "labels": bound}
        )
        url = c.base_url
    err.print(
        f"join token for cluster [bold]{name}[/bold] (labels {bound or '{}'}; one use, expires "
        f"{time.strftime('%H:%M:%S', time.localtime(out['expiresAt']))}). On the cluster run:\n"
        f"  orrery spoke --cluster {name} --join {url} --token <TOKEN> "
        f"--ca-hash {out.get('caHash', '<CA-HASH>')} ..."
    )
    typer.echo(out["token"])


@app.command("approve")
def approve(name: NameArg, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Approve an enrolled cluster (a hub started with --require-approval)."""
    with connect(hub, token) as c:
        out = _call(c, "POST", f"/v1/clusters/{name}:approve")
    console.print(f"cluster {out['cluster']}: {out['state']}")


@app.command("revoke")
def revoke(name: NameArg, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Revoke a cluster: NATS drops it at once, its slices are placed elsewhere."""
    with connect(hub, token) as c:
        out = _call(c, "POST", f"/v1/clusters/{name}:revoke")
    console.print(f"cluster {out['cluster']}: {out['state']}")


ENROLLMENT_COLUMNS = [
    Column("CLUSTER"),
    Column("STATE"),
    Column("LABELS", drop=1, wrap=True),
    Column("CERT UNTIL"),
]


@app.command("list")
def list_(output: OutputOpt = Output.table, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Enrolled clusters: state, bound labels, certificate expiry."""
    with connect(hub, token) as c:
        rows = _call(c, "GET", "/v1/enrollments")

    def row(r: dict[str, Any], _wide: bool) -> list[str]:
        labels = ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items()))
        until = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["notAfter"]))
        return [r["cluster"], r["state"], labels or "-", until]

    emit_list(
        rows,
        output,
        columns=ENROLLMENT_COLUMNS,
        wide=ENROLLMENT_COLUMNS,
        row=row,
        name=lambda r: str(r["cluster"]),
    )
