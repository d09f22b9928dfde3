"""``orrery token create|list|revoke``: API tokens for users and automation (admin).

``create`` prints the token once, on stdout alone (so ``$(orrery token create ...)`` captures
it); what it is for goes to stderr. The hub keeps only its hash.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console

from orrery.access import TokenView
from orrery.cli.columns import Column
from orrery.cli.output import Output, OutputOpt, emit_list
from orrery.config import connect

app = typer.Typer(no_args_is_help=True, help="API tokens: create, list, revoke (admin).")
console = Console()
err = Console(stderr=True)

HubOpt = Annotated[str | None, typer.Option("--hub", envvar="ORRERY_HUB", help="hub URL")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="ORRERY_TOKEN", help="your API token", show_default=False),
]


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@app.command("create")
def create(
    role: Annotated[
        str, typer.Option("--role", help="admin, operator, member or viewer")
    ] = "member",
    team: Annotated[
        str | None, typer.Option("--team", help="the team (member and viewer tokens)")
    ] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="lifetime, e.g. 30d or 12h (default: none)")
    ] = None,
    name: Annotated[str, typer.Option("--name", help="who or what it is for")] = "",
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a token and print it (once: it cannot be shown again)."""
    with connect(hub, token) as c:
        t = c.create_token(role=role, team=team, name=name, ttl=ttl)
    scope = f"role {t.role}" + (f", team {t.team}" if t.team else "")
    err.print(
        f"token [bold]{t.id}[/bold] ({scope}; expires {_when(t.expires_at)}). "
        "Shown once; keep it safe:"
    )
    typer.echo(t.token)


TOKEN_COLUMNS = [
    Column("ID"),
    Column("ROLE"),
    Column("TEAM"),
    Column("NAME", drop=2, wrap=True),
    Column("CREATED", drop=1),
    Column("EXPIRES"),
    Column("STATE"),
]


def _state(t: TokenView, now: float) -> str:
    if t.revoked_at is not None:
        return "revoked"
    if t.expires_at is not None and t.expires_at <= now:
        return "expired"
    return "active"


@app.command("list")
def list_(output: OutputOpt = Output.table, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Every token: id, role, team, dates. Never a secret."""
    with connect(hub, token) as c:
        rows = c.tokens()
    now = time.time()
    emit_list(
        rows,
        output,
        columns=TOKEN_COLUMNS,
        wide=TOKEN_COLUMNS,
        row=lambda r, _wide: [
            r.id,
            r.role,
            r.team or "-",
            r.name or "-",
            _when(r.created_at),
            _when(r.expires_at),
            _state(r, now),
        ],
        name=lambda r: r.id,
    )


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="the token's id (from `orrery token list`)")],
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke a token: the hub refuses it from now on."""
    with connect(hub, token) as c:
        r = c.revoke_token(token_id)
    console.print(f"token {r.id}: revoked")
