"""``python -m orrery_hub.gateway ...`` runs ``orrery gateway ...`` (as ``orrery up`` does)."""

import sys

import typer

from orrery_hub.gateway.cli import command

app = typer.Typer(add_completion=False)
command(app)


@app.callback()
def _root() -> None:
    """Orrery gateway."""


if __name__ == "__main__":
    app(["gateway", *sys.argv[1:]], prog_name="orrery")
