"""A new user's first hour: the mistakes a user makes following the README, each one a
clear line and nothing lost (issue 17)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orrery.errors import InvalidInput
from orrery.statedir import MARKER, claim

ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ORRERY, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", "ORRERY_CONFIG": os.devnull, **(env or {})},
    )


# ---- 1. the demo never deletes a folder it did not make ----------------------------------


def test_demo_refuses_a_state_folder_it_did_not_make(tmp_path: Path) -> None:
    """ORRERY_STATE set for a real hub: `orrery demo` must not wipe that hub's database."""
    hub_state = tmp_path / "my-hub"
    hub_state.mkdir()
    (hub_state / "hub.db").write_text("precious")
    p = run("demo", env={"ORRERY_STATE": str(hub_state)}, timeout=30)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "refusing to delete" in p.stderr and str(hub_state) in p.stderr, p.stderr
    assert (hub_state / "hub.db").read_text() == "precious"
    assert not (hub_state / MARKER).exists()


def test_claim_wipes_only_its_own_marked_folder(tmp_path: Path) -> None:
    fresh = claim(tmp_path / "new", "demo")
    assert (fresh / MARKER).read_text().strip() == "demo"
    (fresh / "old-run.log").write_text("x")
    again = claim(tmp_path / "new", "demo")  # its own: wiped and marked again
    assert not (again / "old-run.log").exists() and (again / MARKER).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (claim(empty, "demo") / MARKER).exists()  # an empty folder loses nothing
    other = tmp_path / "other"
    other.mkdir()
    (other / MARKER).write_text("up\n")  # marked by someone else
    (other / "data").write_text("keep")
    with pytest.raises(InvalidInput, match="refusing to delete"):
        claim(other, "demo")
    assert (other / "data").read_text() == "keep"
    afile = tmp_path / "afile"
    afile.write_text("keep")
    with pytest.raises(InvalidInput, match="is a file"):
        claim(afile, "demo")
    assert afile.read_text() == "keep"
