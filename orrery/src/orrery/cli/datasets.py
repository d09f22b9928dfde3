"""``orrery datasets [NAME]``, ``orrery dataset apply FILE``, ``orrery dataset delete NAME``:
datasets as the hub knows them, with where each is cached. (``orrery submit FILE`` also
applies a ``kind: Dataset`` manifest.)"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orrery.config import connect
from orrery.dataset import human_bytes, parse_dataset
from orrery.resources import DatasetPublic
from orrery.textfile import read_text

app = typer.Typer(no_args_is_help=True, help="Datasets: apply, list, delete.")
console = Console()

HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ORRERY_HUB", help="hub URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="your API token", show_default=False),
]


def table(items: list[DatasetPublic]) -> Table:
    t = Table()
    for col in ("NAME", "SIZE", "SHARDS", "FORMAT", "LABELS", "LOCATIONS", "CACHED ON", "AGE"):
        t.add_column(col)
    for d in items:
        spec = d.spec
        locs = [
            loc.get("uri") or f"{loc.get('cluster')}:{loc.get('path')}"
            for loc in spec.get("locations", [])
        ]
        cached = [
            f"{c.cluster} ({c.state}"
            + (f" {100 * c.bytes_done // max(1, c.size_bytes)}%" if c.state == "Staging" else "")
            + (f", {c.in_use} reading" if c.in_use else "")
            + ")"
            for c in d.cached
        ]
        t.add_row(
            d.name,
            human_bytes(d.size_bytes),
            str(spec.get("shards", 1)),
            str(spec.get("format", "")),
            ",".join(f"{k}={v}" for k, v in sorted(d.labels.items())) or "-",
            "\n".join(locs),
            "\n".join(cached) or "-",
            f"{max(0, time.time() - d.created_at) / 60:.0f}m",
        )
    return t


def apply_text(text: str, source: str, hub: str | None, token: str | None) -> None:
    parse_dataset(text, source=source)  # refuse locally first, with the same messages
    with connect(hub, token) as c:
        d = c.apply_dataset(text)
    console.print(f"dataset [bold]{d.name}[/bold] applied")


@app.command()
def apply(
    file: Annotated[str, typer.Argument(help="a kind: Dataset manifest, YAML or JSON")],
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a dataset, or replace its definition."""
    from pathlib import Path

    apply_text(read_text(Path(file), what="dataset file"), file, hub, token)


@app.command()
def delete(
    name: Annotated[str, typer.Argument(help="the dataset's name")],
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Forget a dataset (jobs that read it can no longer be submitted)."""
    with connect(hub, token) as c:
        d = c.delete_dataset(name)
    console.print(f"dataset {d.name} deleted")


def show(name: str | None, hub: str | None, token: str | None) -> None:
    with connect(hub, token) as c:
        items = [c.dataset(name)] if name else c.datasets()
    console.print(table(items))
