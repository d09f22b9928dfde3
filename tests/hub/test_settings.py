"""The timing rule that keeps a slice from running twice is enforced, with a clear reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from orrery.errors import InvalidInput
from orrery_hub.config.settings import HubSettings, Timing


def test_defaults_keep_the_order() -> None:
    Timing().check()
    t = Timing()
    assert t.lease_s + t.kill_grace_s + t.max_clock_drift_s < t.failover_timeout_s


@pytest.mark.parametrize(
    ("timing", "words"),
    [
        (Timing(lease_s=14, failover_timeout_s=15), r"must exceed lease \+ kill grace"),
        (
            Timing(lease_s=10, kill_grace_s=5, failover_timeout_s=15),
            r"must exceed lease \+ kill grace",
        ),
        (Timing(heartbeat_interval_s=6, lease_s=10), "at least twice the heartbeat"),
        (Timing(heartbeat_interval_s=0), "must be positive"),
        (Timing(kill_grace_s=-1), "cannot be negative"),
    ],
)
def test_unsafe_timings_are_refused(timing: Timing, words: str) -> None:
    with pytest.raises(InvalidInput, match=words):
        timing.check()


def test_bad_port_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="--port"):
        HubSettings(state_dir=tmp_path, port=70000).check()
