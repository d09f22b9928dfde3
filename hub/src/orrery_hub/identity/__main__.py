"""``python -m orrery_hub.identity init --state DIR --listen HOST:PORT``: make the hub's CA,
certificates and order key where missing, and write the nats-server configuration.

What the local federation runs before it starts nats-server (the hub, started next, keeps
the users in that configuration in step with its enrollments). Prints the config's path.
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
    listen: Annotated[str, typer.Option(help="HOST:PORT nats-server listens on")],
    san: Annotated[
        list[str] | None,
        typer.Option(help="another DNS name or IP spokes reach nats-server by (repeatable)"),
    ] = None,
) -> None:
    host, _, port = listen.rpartition(":")
    try:
        paths = files.IdentityPaths.under(state)
        hosts = [host, "127.0.0.1", "localhost", *(san or [])]
        files.ensure(paths, hosts=tuple(dict.fromkeys(h for h in hosts if h and h != "0.0.0.0")))
        conf = files.write_nats_conf(paths, host=host, port=int(port))
    except (OrreryError, ValueError) as exc:
        typer.echo(f"orrery identity init: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(str(conf))


if __name__ == "__main__":
    app(sys.argv[1:], prog_name="python -m orrery_hub.identity")
