"""``python -m orrery_hub ...`` runs ``orrery hub ...`` (how ``orrery up`` starts it)."""

import typer

from orrery_hub.cli.hub import command

app = typer.Typer(add_completion=False)
command(app)


@app.callback()
def _root() -> None:
    """Orrery hub."""


if __name__ == "__main__":
    app(["hub", *__import__("sys").argv[1:]], prog_name="orrery")
