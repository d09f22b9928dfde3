"""The timing presets keep the fencing rule, the hub and spoke accept them, and ``orrery up``
refuses timings that break it — before starting anything — with the reason."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orrery import timing
from orrery.errors import InvalidInput
from orrery.federation import Timings
from orrery_hub.config.settings import Timing
from orrery_spoke_agent.settings import SpokeSettings


@pytest.mark.parametrize("name", sorted(timing.PRESETS))
def test_every_preset_fences_and_both_sides_accept_it(name: str, tmp_path: Path) -> None:
    p = timing.PRESETS[name]
    assert p.fencing_problem() is None
    t = Timings.preset(name)
    t.check()
    Timing(
        heartbeat_interval_s=t.heartbeat_s,
        lease_s=t.lease_s,
        kill_grace_s=t.kill_grace_s,
        failover_timeout_s=t.failover_s,
        max_clock_drift_s=t.drift_s,
        ack_wait_s=min(0.25, t.lease_s / 4),
    ).check()
    SpokeSettings(
        nats_url="nats://127.0.0.1:4222",
        cluster="c",
        state_dir=tmp_path,
        heartbeat_interval_s=t.heartbeat_s,
        lease_s=t.lease_s,
        kill_grace_s=t.kill_grace_s,
    ).check()


def test_aggressive_detects_a_dead_host_within_two_seconds() -> None:
    t = Timings.aggressive()
    # Noticed at the failover timeout, at most one reconcile tick later.
    assert t.failover_s + t.reconcile_s < 2.0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"lease_s": 20.0}, "must exceed lease + kill grace"),
        ({"heartbeat_s": 6.0}, "at least twice --heartbeat-interval"),
        ({"kill_grace_s": -1.0}, "--kill-grace"),
        ({"failover_s": 0.0}, "--failover-timeout"),
    ],
)
def test_unsafe_timings_are_refused(change: dict[str, float], words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("+", r"\+")):
        dataclasses.replace(Timings(), **change).check()


def test_an_unknown_preset_is_named() -> None:
    with pytest.raises(InvalidInput, match="--timing: 'quick' is not one of aggressive"):
        Timings.preset("quick")


def _up(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orrery.cli.main", "up", "--state", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ORRERY_CONFIG": os.devnull, "COLUMNS": "200"},
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--timing", "aggressive", "--lease", "5"], "--failover-timeout (1.3s) must exceed"),
        (["--timing", "nope"], "--timing: 'nope' is not one of"),
        (["--fast", "--timing", "aggressive"], "give one of them"),
        (["--ha", "--timing", "aggressive"], "--ha: a spokes' lease of 0.75s"),
    ],
)
def test_orrery_up_refuses_unsafe_timings_before_starting(
    tmp_path: Path, args: list[str], words: str
) -> None:
    p = _up(*args, state=tmp_path / "fed")
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert words in p.stderr.replace("\n", " "), p.stderr
    assert not (tmp_path / "fed" / "logs").exists()  # nothing was started
