"""``orrery gateway``: the inference gateway alone (``orrery up`` starts one too).
Registered into the ``orrery`` CLI through the ``orrery.commands`` entry point."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated

import typer

from orrery import eventloop, logs
from orrery.hubaddress import hub_url
from orrery.names import is_dns_label


def default_name() -> str:
    """``<host>-<pid>`` as a DNS label: a NATS subject token."""
    host = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().lower()).strip("-")[:50]
    return f"{host or 'gateway'}-{os.getpid()}"


def command(app: typer.Typer) -> None:
    @app.command("gateway")
    def gateway(
        hub: Annotated[
            str, typer.Option(envvar="ORRERY_HUB", help="the hub's API URL")
        ] = "http://127.0.0.1:8080",
        token: Annotated[
            str | None, typer.Option(envvar="ORRERY_TOKEN", help="API token (operator or admin)")
        ] = None,
        port: Annotated[
            int, typer.Option(envvar="ORRERY_GATEWAY_PORT", help="port to serve on (0: any free)")
        ] = 8090,
        host: Annotated[
            str, typer.Option(envvar="ORRERY_GATEWAY_HOST", help="address to serve on")
        ] = "127.0.0.1",
        region: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_REGION", help="this gateway's region: its callers' replicas go first"
            ),
        ] = None,
        name: Annotated[
            str | None,
            typer.Option(
                envvar="ORRERY_GATEWAY_NAME",
                help="its id, unique among gateways: a DNS label (default <host>-<pid>)",
            ),
        ] = None,
        state: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_GATEWAY_STATE",
                help="its NATS key and certificate (default .orrery/gateways/<name>)",
            ),
        ] = None,
        interval: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_GATEWAY_INTERVAL",
                help="report load and refresh routes every this many s",
            ),
        ] = 0.5,
        hold: Annotated[
            float,
            typer.Option(
                envvar="ORRERY_GATEWAY_HOLD",
                help="hold a request this long for a replica to become ready, s",
            ),
        ] = 30.0,
        max_held: Annotated[
            int,
            typer.Option(
                envvar="ORRERY_GATEWAY_MAX_HELD", help="requests held per service at most"
            ),
        ] = 1000,
        ready_file: Annotated[
            Path | None,
            typer.Option(
                envvar="ORRERY_READY_FILE", help="write the gateway URL here once serving"
            ),
        ] = None,
    ) -> None:
        """Run an inference gateway: GATEWAY/services/<name>/<path> to ready replicas."""
        from orrery_hub.gateway.sync import GatewaySettings, run_gateway

        logs.setup()
        if interval <= 0 or hold < 0 or max_held < 0:
            typer.echo(
                "orrery gateway: --interval must be positive, --hold and --max-held not negative",
                err=True,
            )
            raise typer.Exit(2)
        gid = name or default_name()
        if not is_dns_label(gid):
            typer.echo(
                f"orrery gateway: --name {gid!r} must be 1-63 lowercase letters, digits or '-' "
                "(it names the gateway's NATS subject)",
                err=True,
            )
            raise typer.Exit(2)
        settings = GatewaySettings(
            hub_url=hub_url(hub),
            token=token,
            name=gid,
            state_dir=state,
            host=host,
            port=port,
            region=region,
            interval_s=interval,
            hold_s=hold,
            max_held=max_held,
        )

        def on_ready(url: str) -> None:
            typer.echo(f"orrery gateway: {url}", err=True)
            if ready_file:
                tmp = ready_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"url": url}))
                tmp.replace(ready_file)

        try:
            eventloop.run(run_gateway(settings, on_ready=on_ready))
        except OSError as exc:
            typer.echo(f"orrery gateway: cannot serve on {host}:{port}: {exc.strerror}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            pass
