"""``python -m orrery_spoke_agent ...`` runs ``orrery spoke ...`` (how ``orrery up`` starts it)."""

import sys

import typer

from orrery_spoke_agent.cli import command

app = typer.Typer(add_completion=False)
command(app)


@app.callback()
def _root() -> None:
    """Orrery spoke agent."""


if __name__ == "__main__":
    app(["spoke", *sys.argv[1:]], prog_name="orrery")
