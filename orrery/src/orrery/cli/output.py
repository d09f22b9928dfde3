"""``-o wide|json|yaml|name``, as ``kubectl get`` takes it, for every list and show command.

``json`` and ``yaml`` print what the API returns (camelCase, a list as ``{"items": [...]}``);
``name`` prints one ID or name per line, to feed ``xargs`` or ``orrery cancel``; the
default is a table fitted to the terminal, ``wide`` every column, unfitted.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel

from orrery.cli.columns import Column, render


class Output(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"


OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        envvar="ORRERY_OUTPUT",
        case_sensitive=False,
        help="table, wide (every column), json, yaml, or name (one per line)",
    ),
]


def width() -> int | None:
    """How wide a table may be: the terminal's (or ``COLUMNS``); None when stdout is not a
    terminal — a pipe or a log gets every column, whole."""
    if os.environ.get("COLUMNS", "").isdigit():
        return int(os.environ["COLUMNS"])
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size((80, 24)).columns


def plain(value: Any) -> Any:
    """A model (or a list of them) as the API's JSON shape."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def dump(value: Any, fmt: Output) -> str:
    data = plain(value)
    if fmt is Output.json:
        return json.dumps(data, indent=2, sort_keys=False)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip("\n")


def emit_list(
    items: Sequence[Any],
    fmt: Output,
    *,
    columns: Sequence[Column],
    wide: Sequence[Column],
    row: Callable[[Any, bool], Sequence[str]],
    name: Callable[[Any], str],
    raw: Any = None,
) -> None:
    """Print ``items`` in ``fmt``. ``row(item, wide)`` gives the cells of ``columns`` (or of
    ``wide``); ``raw`` is what json/yaml print, by default ``{"items": items}``."""
    if fmt in (Output.json, Output.yaml):
        typer.echo(dump(raw if raw is not None else {"items": list(items)}, fmt))
    elif fmt is Output.name:
        for it in items:
            typer.echo(name(it))
    elif fmt is Output.wide:
        typer.echo(render(wide, [row(it, True) for it in items], None))
    else:
        typer.echo(render(columns, [row(it, False) for it in items], width()))
