"""The README's commands exactly as written, and the mistakes a new user makes on the way
(issue 17): each ends in one line saying why, and leaves nothing running behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]
ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def _procs_under(folder: Path) -> list[str]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(folder) in line and "ps -eww" not in line]


def _wait_gone(folder: Path, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while _procs_under(folder):
        assert time.monotonic() < deadline, _procs_under(folder)
        time.sleep(0.1)


@pytest.fixture
def busy_port() -> Iterator[int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORRERY_")}
    return {**env, "COLUMNS": "120", "ORRERY_CONFIG": str(tmp_path / "config.yaml"), **extra}


def test_readme_up_with_policies_as_written_then_submit_wait(tmp_path: Path) -> None:
    """`./dev up --policies policies/` from the repository root, as the README writes it:
    the relative folder is the user's, not the hub's state folder's."""
    state = tmp_path / "fed"
    env = _env(tmp_path, ORRERY_STATE=str(state), ORRERY_PORT="0", ORRERY_FAST="1")
    proc = subprocess.Popen(
        ["./dev", "up", "--policies", "policies/"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        seen = ""
        deadline = time.monotonic() + 90
        while "export ORRERY_TOKEN=" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stdout.readline()
        # The README's next command, as written, against that federation.
        p = subprocess.run(
            ["./dev", "submit", "examples/train.yaml", "--wait"],
            cwd=REPO,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Succeeded" in p.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    _wait_gone(state)


def test_up_on_a_port_in_use_says_so(tmp_path: Path, busy_port: int) -> None:
    state = tmp_path / "fed"
    p = subprocess.run(
        [*ORRERY, "up", "--port", str(busy_port), "--state", str(state), "--spokes", "1"],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=90,
    )
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    assert "Address already in use" in p.stderr and str(busy_port) in p.stderr, p.stderr
    _wait_gone(state)


def test_up_with_a_missing_policy_folder_names_it(tmp_path: Path) -> None:
    state = tmp_path / "fed"
    p = subprocess.run(
        [*ORRERY, "up", "--port", "0", "--state", str(state), "--policies", "nope/"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=90,
    )
    assert p.returncode != 0
    assert str(tmp_path / "nope") in p.stderr, p.stderr  # resolved where the user stands
    assert "Traceback" not in p.stderr
    _wait_gone(state)


def test_a_failed_hub_start_leaves_no_nats_server(tmp_path: Path, busy_port: int) -> None:
    """`orrery hub` starts its own nats-server; a port in use must not orphan it."""
    state = tmp_path / "hub"
    p = subprocess.run(
        [*ORRERY, "hub", "--port", str(busy_port), "--state", str(state)],
        capture_output=True,
        text=True,
        env=_env(tmp_path),
        timeout=60,
    )
    assert p.returncode == 2, p.stderr
    assert "cannot listen" in p.stderr and "Address already in use" in p.stderr, p.stderr
    assert (state / "nats-server.log").exists()  # it did start one
    _wait_gone(state, within=5)
