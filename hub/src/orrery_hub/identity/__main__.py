"""``python -m orrery_hub.identity init --state DIR --listen HOST:PORT [--route-port P]...``:
make the hub's CA, certificates and order key where missing, and write the nats-server
configuration (one per member, for a cluster).

What the local federation runs before it starts nats-server (the hub, started next, keeps
the users in that configuration in step with its enrollments). Prints each config's path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from orrery.errors import OrreryError
from orrery_hub.identity import files

app = typer.Typer(add_completion=False)


@app.callback()
def _root() -> None:
    """Orrery hub identity."""


@app.command()
def init(
    state: Annotated[Path, typer.Option(help="the hub's --state folder")],
    listen: Annotated[
        list[str],
        typer.Option(
            help="HOST:PORT nats-server listens on; repeated with --route-port, the members "
            "of a cluster (configurations nats-0.conf, nats-1.conf, ...)"
        ),
    ],
    route_port: Annotated[
        list[int] | None,
        typer.Option(help="each member's cluster (route) port, in --listen's order"),
    ] = None,
    san: Annotated[
        list[str] | None,
        typer.Option(help="another DNS name or IP spokes reach nats-server by (repeatable)"),
    ] = None,
) -> None:
    routes = route_port or []
    try:
        if len(listen) > 1 and len(routes) != len(listen):
            raise ValueError("a cluster needs one --route-port per --listen")
        addrs = [(h, int(p)) for h, _, p in (x.rpartition(":") for x in listen)]
        paths = files.IdentityPaths.under(state)
        hosts = [*(h for h, _ in addrs), "127.0.0.1", "localhost", *(san or [])]
        files.ensure(paths, hosts=tuple(dict.fromkeys(h for h in hosts if h and h != "0.0.0.0")))
        if len(addrs) == 1 and not routes:
            confs = [files.write_nats_conf(paths, host=addrs[0][0], port=addrs[0][1])]
        else:
            confs = [
                files.write_nats_conf(
                    paths,
                    host=host,
                    port=port,
                    name=f"nats-{i}",
                    cluster_port=routes[i],
                    routes=tuple(
                        f"{h}:{routes[j]}" for j, (h, _) in enumerate(addrs) if j != i
                    ),
                )
                for i, (host, port) in enumerate(addrs)
            ]
    except (OrreryError, ValueError) as exc:
        typer.echo(f"orrery identity init: {exc}", err=True)
        raise typer.Exit(2) from None
    for conf in confs:
        typer.echo(str(conf))


if __name__ == "__main__":
    app(sys.argv[1:], prog_name="python -m orrery_hub.identity")
