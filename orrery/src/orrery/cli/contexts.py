"""``orrery config``: the contexts of the CLI's config file (hub URL, token, CA), like
``kubectl config``. The file is written 0600; tokens are never printed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from orrery import config
from orrery.errors import InvalidInput, NotFound

app = typer.Typer(no_args_is_help=True, help="Contexts: which hub and token the CLI uses.")
console = Console()


@app.command("get-contexts")
def get_contexts() -> None:
    """Every context; * marks the current one."""
    cfg = config.load()
    t = Table(title=f"contexts in {config.config_path()}", title_justify="left")
    for col in ("", "NAME", "HUB", "TOKEN", "CA"):
        t.add_column(col)
    for c in cfg.contexts:
        mark = "*" if c.name == cfg.current_context else ""
        token = "(set)" if c.token else "-"
        t.add_row(mark, c.name, c.hub, token, c.ca or "-")
    console.print(t)


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
