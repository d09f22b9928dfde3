"""``orrery config``: the contexts of the CLI's config file (hub URL, token, CA), like
``kubectl config``. The file is written 0600; tokens are never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orrery import config
from orrery.cli.columns import Column
from orrery.cli.output import Output, OutputOpt, emit_list
from orrery.errors import InvalidInput, NotFound

app = typer.Typer(no_args_is_help=True, help="Contexts: which hub and token the CLI uses.")
console = Console()
err = Console(stderr=True)


CONTEXT_COLUMNS = [
    Column(""),
    Column("NAME"),
    Column("HUB", wrap=True),
    Column("TOKEN"),
    Column("CA", drop=1),
]


@app.command("get-contexts")
def get_contexts(output: OutputOpt = Output.table) -> None:
    """Every context; * marks the current one. Never a token: json and yaml say whether
    one is set."""
    cfg = config.load()
    shown = [
        {
            "name": c.name,
            "hub": c.hub,
            "tokenSet": c.token is not None,
            "ca": c.ca,
            "current": c.name == cfg.current_context,
        }
        for c in cfg.contexts
    ]
    if output is Output.table:
        err.print(f"contexts in {config.config_path()}")
    emit_list(
        shown,
        output,
        columns=CONTEXT_COLUMNS,
        wide=CONTEXT_COLUMNS,
        row=lambda c, _wide: [
            "*" if c["current"] else "",
            c["name"],
            c["hub"],
            "(set)" if c["tokenSet"] else "-",
            c["ca"] or "-",
        ],
        name=lambda c: str(c["name"]),
    )


@app.command("use-context")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    cfg = config.load()
    if cfg.get(name) is None:
        raise NotFound(f"no context named {name!r} in {config.config_path()}")
    cfg.current_context = name
    config.save(cfg)
    console.print(f"current context: {name}")


@app.command("set-context")
def set_context(
    name: str,
    hub: Annotated[str, typer.Option("--hub", help="the hub's URL")],
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="a file holding the token (not a flag: shell history)"),
    ] = None,
    ca: Annotated[
        Path | None, typer.Option("--ca", help="CA certificate to verify an https hub")
    ] = None,
    current: Annotated[bool, typer.Option(help="make it the current context")] = True,
) -> None:
    """Add or replace a context."""
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"--token-file: {token_file}: {exc.strerror}") from None
    where = config.set_context(
        config.Context(name=name, hub=hub, token=token, ca=str(ca.resolve()) if ca else None),
        current=current,
    )
    console.print(f"context {name} written to {where}" + (" (current)" if current else ""))
