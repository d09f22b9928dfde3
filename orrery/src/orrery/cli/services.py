"""``orrery serve FILE``, ``orrery services [NAME] [--watch] [--delete]``: inference
services (``kind: InferenceService``) on a hub."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orrery.client import HubClient
from orrery.config import connect
from orrery.service_manifest import parse_service_manifest
from orrery.service_resources import ServicePublic
from orrery.textfile import read_text

console = Console()

HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ORRERY_HUB", help="hub URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="your API token", show_default=False),
]


def _call(c: HubClient, method: str, path: str, **kw: Any) -> Any:
    r = c._request(method, path, idempotent=method != "POST", **kw)
    c._raise_for(r)
    return r.json()


def apply(c: HubClient, text: str) -> ServicePublic:
    return ServicePublic.model_validate(
        _call(
            c,
            "POST",
            "/v1/services",
            content=text.encode(),
            headers={"content-type": "application/yaml"},
        )
    )


def get(c: HubClient, name: str) -> ServicePublic:
    return ServicePublic.model_validate(_call(c, "GET", f"/v1/services/{name}"))


def listing(c: HubClient) -> list[ServicePublic]:
    return [ServicePublic.model_validate(x) for x in _call(c, "GET", "/v1/services")]


def delete(c: HubClient, name: str) -> ServicePublic:
    return ServicePublic.model_validate(_call(c, "DELETE", f"/v1/services/{name}"))


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f} ms"


def table(items: list[ServicePublic]) -> Table:
    t = Table("NAME", "PHASE", "READY", "DESIRED", "IN FLIGHT", "REQ/S", "P95", "REASON")
    for s in items:
        st = s.status
        t.add_row(
            s.name,
            st.phase,
            str(st.ready),
            str(st.desired),
            f"{st.concurrency:.1f}",
            f"{st.requests_per_s:.0f}",
            _ms(st.latency_p95_s),
            st.reason[:60],
        )
    return t


def detail(s: ServicePublic) -> Group:
    st = s.status
    head = Text.assemble(
        (s.name, "bold"),
        f"  {st.phase}  ready {st.ready}/{st.desired}",
        "  PANIC" if st.panic else "",
        f"\nin flight {st.concurrency:.1f}  {st.requests_per_s:.0f} req/s  p95 "
        f"{_ms(st.latency_p95_s)}  cold start {_ms(st.cold_start_s)}",
        f"\nscaling: {st.reason}" if st.reason else "",
    )
    t = Table("REPLICA", "JOB", "PHASE", "CLUSTER", "REGION", "ENDPOINT", "LOAD")
    for r in st.replicas:
        load = " ".join(f"{k.removeprefix('load.')}={v:g}" for k, v in sorted(r.load.items()))
        t.add_row(
            str(r.replica),
            r.job,
            r.phase,
            r.cluster or "-",
            r.region or "-",
            r.endpoint or "-",
            load or "-",
        )
    return Group(head, t)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        file: Annotated[Path, typer.Argument(help="InferenceService manifest, YAML or JSON")],
        hub: HubOpt = None,
        token: TokenOpt = None,
    ) -> None:
        """Create or update an inference service (a changed command rolls its replicas)."""
        text = read_text(file, what="manifest file")
        parse_service_manifest(text, source=str(file))  # refuse locally, same messages
        with connect(hub, token) as c:
            s = apply(c, text)
            console.print(
                f"service [bold]{s.name}[/bold] applied ({s.status.phase}); "
                f"reach it at GATEWAY/services/{s.name}/"
            )

    @app.command()
    def services(
        name: Annotated[str | None, typer.Argument(help="one service's detail")] = None,
        watch: Annotated[bool, typer.Option("--watch", "-w", help="live view")] = False,
        remove: Annotated[
            bool, typer.Option("--delete", help="stop its replicas, forget it")
        ] = False,
        hub: HubOpt = None,
        token: TokenOpt = None,
    ) -> None:
        """List inference services, or show one with its replicas and what drives scaling."""
        with connect(hub, token) as c:
            if remove:
                if name is None:
                    raise typer.BadParameter("--delete needs a service NAME")
                s = delete(c, name)
                console.print(
                    f"service {s.name}: deleted ({len(s.status.replicas)} replica(s) stopped)"
                )
                return

            def render() -> Any:
                return table(listing(c)) if name is None else detail(get(c, name))

            if not watch:
                console.print(render())
                return
            with Live(console=console, refresh_per_second=2) as lv:
                while True:
                    lv.update(render())
                    time.sleep(1)
