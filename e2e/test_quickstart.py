"""The README's quickstart commands, as a user runs them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e
ORRERY = [sys.executable, "-m", "orrery.cli.main"]


def _procs_under(folder: Path) -> list[str]:
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(folder) in line and "ps -eww" not in line]


def test_demo_exits_0_after_the_job_survives_a_killed_spoke(tmp_path: Path) -> None:
    state = tmp_path / "demo"
    p = subprocess.run(
        [*ORRERY, "demo", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "SIGKILL the spoke agent" in p.stdout
    assert "demo: the job succeeded" in p.stdout
    assert "GangRestart" in p.stdout or "restarting all 2 slices" in p.stdout
    assert not _procs_under(state), "the demo left processes behind"


def test_up_starts_a_federation_and_sigterm_stops_all_of_it(tmp_path: Path) -> None:
    state = tmp_path / "fed"
    config = tmp_path / "orrery-config.yaml"
    proc = subprocess.Popen(
        [*ORRERY, "up", "--spokes", "2", "--port", "0", "--state", str(state), "--fast"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "120", "ORRERY_CONFIG": str(config)},
    )
    assert proc.stdout is not None
    try:
        seen = ""
        deadline = time.monotonic() + 60
        while "export ORRERY_TOKEN=" not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen
            seen += proc.stdout.readline()
        assert "eu-west" in seen and "us-east" in seen
        assert len(_procs_under(state)) >= 3  # hub and two spokes (nats-server has no path)
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in seen.splitlines()
            if line.startswith("export ")
        )
        hub, token = exports["ORRERY_HUB"], exports["ORRERY_TOKEN"]
        # The printed token works, nothing works without one, and `orrery up` wrote an
        # admin context (0600) that the CLI uses with no flags.
        assert httpx.get(f"{hub}/v1/clusters").status_code == 401
        r = httpx.get(f"{hub}/v1/clusters", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and len(r.json()["items"]) == 2
        assert config.stat().st_mode & 0o077 == 0
        env = {k: v for k, v in os.environ.items() if k not in ("ORRERY_HUB", "ORRERY_TOKEN")}
        p = subprocess.run(
            [*ORRERY, "clusters"],
            capture_output=True,
            text=True,
            env={**env, "ORRERY_CONFIG": str(config), "COLUMNS": "120"},
            timeout=60,
        )
        assert p.returncode == 0 and "eu-west" in p.stdout, p.stderr
    finally:
        proc.send_signal(signal.SIGTERM)  # even when an assertion failed: leave nothing behind
        proc.wait(30)
    deadline = time.monotonic() + 15
    while _procs_under(state):
        assert time.monotonic() < deadline, _procs_under(state)
        time.sleep(0.1)
