"""The CLI starts fast: a client command imports none of the hub's or the spoke's code
(SQLAlchemy, FastAPI, the scheduler: seconds of imports on a loaded machine), while the
hub's and the spoke's commands still load, and are listed, where asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orrery.cli.main import _command_named

HEAVY = ("orrery_hub", "orrery_spoke_agent", "sqlalchemy", "fastapi", "sqlmodel")


def _imported(*argv: str) -> list[str]:
    code = (
        "import sys\n"
        f"sys.argv = ['orrery', *{list(argv)!r}]\n"
        "import orrery.cli.main\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout)  # type: ignore[no-any-return]


def test_a_client_command_imports_no_hub_or_spoke_code() -> None:
    assert _imported("jobs") == []
    assert _imported("submit", "-") == []


def test_the_hub_command_loads_the_hub_plugin_and_the_listing_loads_all() -> None:
    assert "orrery_hub.cli.hub" in _imported("hub", "--help")
    listed = _imported("--help")
    assert "orrery_hub.cli.hub" in listed and "orrery_spoke_agent.cli" in listed


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (["orrery"], None),
        (["orrery", "--help"], None),
        (["orrery", "--version"], None),
        (["orrery", "jobs", "-o", "json"], "jobs"),
        (["orrery", "hub", "--port", "0"], "hub"),
        (["/venv/bin/orrery", "sim", "x"], "sim"),
        (["/src/orrery/cli/main.py", "jobs"], "jobs"),  # python -m orrery.cli.main
        # Imported by something else (pytest driving the app in process): every command.
        (["/venv/bin/pytest", "tests/x.py"], None),
        (["/lib/pytest/__main__.py", "-q", "tests"], None),
    ],
)
def test_the_command_is_the_first_word_that_is_not_an_option(
    argv: list[str], want: str | None
) -> None:
    assert _command_named(argv) == want
