"""The ``orrery`` CLI run in the test's own process (typer's runner).

Starting an interpreter and importing the CLI costs 1–3 s a call on a loaded machine: most
of a CLI test's time. Tests that check what only a real process shows (the console
script's one-line errors, exit codes, no traceback) keep ``subprocess``; the rest use this.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping


def cli(*args: str, env: Mapping[str, str | None], columns: int = 200) -> tuple[int, str, str]:
    """Exit code, stdout and stderr. A domain error, which the console script prints as one
    line, comes back as its message at the end of stderr, with the script's exit code. The process's
    ORRERY_HUB, ORRERY_TOKEN and ORRERY_CONTEXT are not seen unless ``env`` sets them."""
    from typer.testing import CliRunner

    from orrery.cli.main import app
    from orrery.errors import InvalidInput, ManifestError, NotFound, OrreryError

    _size_consoles(columns)
    res = CliRunner().invoke(
        app,
        list(args),
        env={
            "ORRERY_HUB": None,
            "ORRERY_TOKEN": None,
            "ORRERY_CONTEXT": None,
            "COLUMNS": str(columns),
            "ORRERY_CONFIG": os.devnull,
            **env,
        },
    )
    exc = res.exception
    if isinstance(exc, OrreryError):  # as the console script (``orrery.cli.main.run``)
        code = 2 if isinstance(exc, ManifestError | InvalidInput | NotFound) else 1
        return code, res.stdout, res.stderr + exc.message
    return res.exit_code, res.stdout, res.stderr


def _size_consoles(columns: int) -> None:
    """The CLI's rich consoles take COLUMNS when their module is imported: once per test
    process, whatever a later call's COLUMNS (CI, with COLUMNS=80 set, saw a message
    wrapped: "Shown \nonce"). A console script imports them afresh each run."""
    from rich.console import Console

    for name, module in list(sys.modules.items()):
        if name.startswith("orrery.cli"):
            for value in vars(module).values():
                if isinstance(value, Console):
                    value.width = columns


def completed(
    args: tuple[str, ...], result: tuple[int, str, str]
) -> subprocess.CompletedProcess[str]:
    """``cli``'s result in the shape ``subprocess.run`` gives."""
    code, out, err = result
    return subprocess.CompletedProcess(list(args), code, out, err)
